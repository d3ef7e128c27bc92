"""Starts the real proxy, as run_proxy.sh does, in a child process."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTUP_WAIT = 60.0
LISTENING = re.compile(r"^Mirrorgate proxy listening on (\S+):(\d+)$")


@dataclass
class ProxyProcess:
    proc: subprocess.Popen
    port: int
    confdir: Path
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)

    def trust_bundle(self, other_ca: Path, path: Path) -> Path:
        """A CA file trusting this proxy's CA and `other_ca` (the fakes'), for clients
        that take one file."""
        path.write_text(self.ca.read_text() + other_ca.read_text())
        return path

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def text(self) -> str:
        return "\n".join(self.output)


def mirrorgate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mirrorgate", "--listen-host", "127.0.0.1", *args]


def clean_env() -> dict[str, str]:
    """The machine's environment minus anything that changes how a proxy or client
    behaves: proxies, CA overrides and package-manager configuration."""
    drop = re.compile(r"^(https?_proxy|no_proxy|all_proxy|ssl_cert_.*|requests_ca_bundle|curl_ca_bundle|"
                      r"node_extra_ca_certs|pip_.*|npm_config_.*)$", re.I)
    return {k: v for k, v in os.environ.items() if not drop.match(k)}


def launch(cmd: list[str], confdir: Path, env: dict[str, str]) -> ProxyProcess:
    """Start a command that runs Mirrorgate (in any way) and wait for its banner."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip("\n"))
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + STARTUP_WAIT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            proc.wait(15)
            raise RuntimeError("proxy did not start in time:\n" + "\n".join(output)) from None
        if line is None:
            proc.wait(15)
            raise RuntimeError(f"proxy exited with {proc.returncode}:\n" + "\n".join(output))
        m = LISTENING.match(line)
        if m:
            return ProxyProcess(proc, int(m.group(2)), confdir, output)


def start_proxy(rules: Path, confdir: Path, upstream_ca: Path | None, *args: str,
                cache_dir: Path | None = None) -> ProxyProcess:
    cmd = mirrorgate_command("--listen-port", "0", "--set", f"confdir={confdir}", "--set", f"rules={rules}",
                             "--set", f"cache_dir={cache_dir or rules.with_suffix('.cache')}",
                             *(["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"] if upstream_ca else []),
                             *args)
    return launch(cmd, confdir, clean_env())


def run_to_exit(rules: Path, confdir: Path, *args: str, timeout: float = STARTUP_WAIT) -> subprocess.CompletedProcess:
    """Run the proxy expecting it to refuse to start."""
    cmd = mirrorgate_command("--listen-port", "0", "--set", f"confdir={confdir}", "--set", f"rules={rules}",
                             "--set", f"cache_dir={rules.with_suffix('.cache')}", *args)
    return subprocess.run(cmd, cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
