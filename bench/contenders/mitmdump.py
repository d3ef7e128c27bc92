"""Plain `mitmdump --map-remote`: the naive way to send registry traffic to a mirror
with mitmproxy. As a user would run it: the origin's host mapped to the mirror's, the
upstream CA trusted, everything else at mitmproxy's defaults (bodies are buffered whole
in memory, no fallback, no cache)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.contenders import Running
from tests.support.proxy import clean_env

READY_WAIT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workdir: Path, map_remote: list[str], upstream_ca: Path) -> Running:
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    mitmdump = Path(sys.executable).with_name("mitmdump")
    cmd = [str(mitmdump), "--listen-host", "127.0.0.1", "--listen-port", str(port),
           "--set", f"confdir={workdir / 'conf'}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    for spec in map_remote:
        cmd += ["--map-remote", spec]
    log = open(workdir / "mitmdump.log", "w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    deadline = time.monotonic() + READY_WAIT
    while True:  # mitmdump prints nothing machine-readable when it listens: poll the port
        if proc.poll() is not None:
            raise RuntimeError(f"mitmdump exited: {(workdir / 'mitmdump.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("mitmdump did not listen in time") from None
            time.sleep(0.05)
    return Running("mitmdump", proc, proxy_url=f"http://127.0.0.1:{port}",
                   extra_ca=workdir / "conf" / "mitmproxy-ca-cert.pem", workdir=workdir)
