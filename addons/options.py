"""Declaring Mirrorgate's options in one way, so that start-up can apply them all.

An addon acts on an option in `configure`, which mitmproxy calls only when the option
is set. Start-up therefore sets each declared option once more (mirrorgate/cli.py), so
that defaults are validated and take effect like values given with --set.
"""

from __future__ import annotations

DECLARED: list[str] = []


def add_option(loader, name: str, typespec, default, help: str) -> None:
    if name not in DECLARED:
        DECLARED.append(name)
    loader.add_option(name, typespec, default, help)
