"""Mirrorgate as the benchmark runs it: the real proxy process, started as the tests
start it, with the benchmark's rules and a cache directory of its own."""

from __future__ import annotations

from pathlib import Path

from bench.contenders import Running
from tests.support.proxy import start_proxy


def start(workdir: Path, rules_yaml: str, upstream_ca: Path, *args: str) -> Running:
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yaml"
    rules.write_text(rules_yaml)
    p = start_proxy(rules, workdir / "conf", upstream_ca, *args, cache_dir=workdir / "cache")
    return Running("mirrorgate", p.proc, proxy_url=p.url, extra_ca=p.ca, workdir=workdir)
