"""Plain `mitmdump --map-remote`: the naive way to send registry traffic to a mirror
with mitmproxy. As a user would run it: the origin's host mapped to the mirror's, the
upstream CA trusted, everything else at mitmproxy's defaults (bodies are buffered whole
in memory, no fallback, no cache)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.contenders import Running, free_port, listening, wait_ready
from tests.support.proxy import clean_env


def start(workdir: Path, map_remote: list[str], upstream_ca: Path) -> Running:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mitmdump = Path(sys.executable).with_name("mitmdump")
    cmd = [str(mitmdump), "--listen-host", "127.0.0.1", "--listen-port", str(port),
           "--set", f"confdir={workdir / 'conf'}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    for spec in map_remote:
        cmd += ["--map-remote", spec]
    log = open(workdir / "mitmdump.log", "w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    # mitmdump prints nothing machine-readable when it listens: poll the port.
    wait_ready(proc, listening(port), "mitmdump", workdir / "mitmdump.log")
    return Running("mitmdump", proc, proxy_url=f"http://127.0.0.1:{port}",
                   extra_ca=workdir / "conf" / "mitmproxy-ca-cert.pem", workdir=workdir)
