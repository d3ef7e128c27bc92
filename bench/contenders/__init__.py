"""The things a package manager can be pointed at instead of the registry itself, as the
benchmark starts them: Mirrorgate, plain mitmdump, Verdaccio, devpi/proxpi, Squid.

Each contender module has `start(...) -> Running`. A `Running` says how a client uses it
(as its HTTPS proxy, as its registry URL, or both) and measures its processes: CPU
seconds and peak RSS since the last `reset()`, over the whole process tree (Squid and
Verdaccio fork helpers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[2]
STARTUP_WAIT = 60.0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out += [int(c) for c in text.split()]
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo += _children(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and of its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: clear_refs 5), so that a warm run's
    peak is its own, not the cold run's."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


@dataclass
class Usage:
    cpu_s: float
    peak_rss_mib: float  # the sum over the tree of each process's peak: an upper bound


@dataclass
class Running:
    name: str
    proc: subprocess.Popen | None
    proxy_url: str | None = None      # the client's HTTPS_PROXY, if it is a proxy
    registry_url: str | None = None   # the client's registry/index base URL, if it is a registry
    extra_ca: Path | None = None      # a CA the client must trust besides the fakes' own
    workdir: Path | None = None
    extra_pids: list[int] = field(default_factory=list)  # processes not under `proc` (daemons)
    _cpu_base: float = 0.0

    def pids(self) -> list[int]:
        roots = ([self.proc.pid] if self.proc else []) + self.extra_pids
        return [p for r in roots for p in process_tree(r)]

    def reset(self) -> None:
        pids = self.pids()
        for p in pids:
            reset_peak(p)
        self._cpu_base = sum(cpu_seconds(p) for p in pids)

    def usage(self) -> Usage:
        pids = self.pids()
        return Usage(round(sum(cpu_seconds(p) for p in pids) - self._cpu_base, 2),
                     round(sum(peak_rss_kib(p) for p in pids) / 1024, 1))

    def stop(self) -> None:
        for pid in self.extra_pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc:
            terminate(self.proc)


def terminate(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM, and SIGKILL if it is still there after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


# ---- starting servers ------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for servers that cannot be told to take port 0 and
    report it."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, ready: Callable[[], bool], what: str, log: Path,
               timeout: float = STARTUP_WAIT) -> None:
    """Poll `ready` until it is true; fail at once if the server exits, and after
    `timeout` seconds if it never gets there."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(20)
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (exit {proc.returncode}):\n{tail}")
        time.sleep(0.05)  # between probes of a server that is still starting


def http_ok(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    return probe


def listening(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def probe() -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False
    return probe


def missing(tool: Path, what: str) -> RuntimeError:
    return RuntimeError(f"{what} is not installed ({tool} is missing): run bench/install_contenders.sh")
