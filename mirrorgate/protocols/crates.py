"""crates.io: `.crate` files are checked against the `cksum` (SHA-256) that the crate's
sparse-index file records for that version, fetched from the `index` the rule names.

cargo asks for `<dl>/<name>/<version>/download` (crates.io's config.json names no
template); mirrors keep files as `<name>/<name>-<version>.crate`, so that is the path
a mirror is asked for."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from mirrorgate.protocols import Digest, Protocol

# /<name>/<name>-<version>.crate, static.crates.io's layout below /crates/
CRATE = re.compile(r"^/([^/]+)/([^/]+)\.crate$")
# /<name>/<version>/download, what cargo derives from a config.json without markers
DOWNLOAD = re.compile(r"^/([^/]+)/([^/]+)/download$")


def index_path(name: str) -> str:
    """Where the sparse index keeps a crate's file (cargo's registry index layout)."""
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def crate_version(path: str) -> tuple[str, str] | None:
    d = DOWNLOAD.match(path)
    if d:
        return unquote(d.group(1)), unquote(d.group(2))
    m = CRATE.match(path)
    if not m:
        return None
    name, stem = unquote(m.group(1)), unquote(m.group(2))
    if not stem.startswith(name + "-"):
        return None
    return name, stem[len(name) + 1:]


def cksum(index_file: str, version: str) -> str | None:
    for line in index_file.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("vers") == version and isinstance(entry.get("cksum"), str):
            return entry["cksum"]
    return None


class CratesFiles(Protocol):
    name = "crates-files"
    options = ("index",)

    def checks(self, path: str) -> bool:
        return crate_version(path) is not None

    def mirror_path(self, path: str) -> str:
        found = crate_version(path)
        return f"/{found[0]}/{found[0]}-{found[1]}.crate" if found else path

    async def expect(self, path: str, url: str, options: dict, fetch) -> Digest | None:
        found = crate_version(path)
        index = options.get("index")
        if found is None or not index:
            return None
        name, version = found
        body = await fetch(f"{index.rstrip('/')}/{index_path(name)}", {})
        sha256 = cksum(body.decode("utf-8", "replace"), version) if body is not None else None
        if not sha256 or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            return None
        return Digest("sha256", bytes.fromhex(sha256))
