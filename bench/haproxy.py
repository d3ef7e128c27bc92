"""HAProxy in TCP mode in front of several proxy processes on loopback ports.

A CONNECT tunnel is one TCP connection, so balancing connections (L4) keeps each client's
tunnel, and everything decrypted inside it, on one process. Debian package: haproxy.

The proxies then see HAProxy's address as every client's: `client_allow` and the access
log's `client` stop meaning anything (mitmproxy reads no PROXY protocol header), so a
deployment must enforce the allowlist in HAProxy (`tcp-request connection reject`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from bench.contenders import terminate

CONFIG = """\
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend proxies
    bind fd@{fd}
    default_backend proxies
backend proxies
    balance {balance}
{servers}
"""


class Balancer:
    """One HAProxy thread; its listening socket is bound here and handed over, so it
    accepts connections (into the backlog) before HAProxy has even started."""

    def __init__(self, backend_ports: list[int], workdir: Path, balance: str = "leastconn",
                 cpus: str | None = None) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = listener.getsockname()[1]
        config = workdir / f"haproxy-{self.port}.cfg"
        config.write_text(CONFIG.format(
            fd=listener.fileno(), balance=balance,
            servers="\n".join(f"    server p{i} 127.0.0.1:{port}" for i, port in enumerate(backend_ports))))
        checked = subprocess.run([haproxy, "-c", "-f", str(config)], pass_fds=(listener.fileno(),),
                                 capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            listener.close()
            raise SystemExit(f"haproxy refused {config}: {checked.stderr.strip()}")
        pin = ["taskset", "-c", cpus] if cpus else []
        # -db: foreground, no daemon, so that this process owns it and can measure it.
        self.proc = subprocess.Popen([*pin, haproxy, "-db", "-f", str(config)], pass_fds=(listener.fileno(),),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        # HAProxy holds the socket now; ours would keep accepting into the backlog if it died.
        listener.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        terminate(self.proc, 10)
