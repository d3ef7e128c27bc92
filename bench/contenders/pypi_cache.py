"""proxpi, the PyPI caching proxy, in front of one simple index, run as its Docker image
runs it: gunicorn, one worker process (its caches live in memory and are not shared
between processes), a few threads.

What it caches and how:
- Project pages: parsed and kept in memory for PROXPI_INDEX_TTL (default 30 min), so a
  restarted server starts with none; it asks `<index>/<project>` (no trailing slash) and
  relies on the index redirecting, or else reads the root project list.
- Files: its pages link every file to itself (`/index/<project>/<filename>`); it
  downloads the upstream file whole into PROXPI_CACHE_DIR (after a HEAD for its size),
  then sends it from disk. No streaming: a client waits for the whole download. If that
  takes longer than PROXPI_DOWNLOAD_TIMEOUT (its default 0.9 s) it redirects the client
  to the upstream URL instead, and the cache fills in the background. `download_timeout`
  sets it; the default here is long, so that every file is served by proxpi.
- On restart, files already in the cache directory are found again; a new `workdir` is a
  cold cache.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.contenders import ROOT, Running, free_port, http_ok, missing, wait_ready
from tests.support.proxy import clean_env

VENV = ROOT / "bench" / ".tools" / "pypi-cache-venv"


def start(workdir: Path, index_url: str, ca_file: Path, download_timeout: float = 600.0,
          threads: int = 2) -> Running:
    gunicorn = VENV / "bin" / "gunicorn"
    if not gunicorn.exists():
        raise missing(gunicorn, "proxpi")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "proxpi.log"
    env = {**clean_env(), "HOME": str(workdir),
           "PROXPI_INDEX_URL": index_url, "PROXPI_CACHE_DIR": str(workdir / "cache"),
           "PROXPI_DOWNLOAD_TIMEOUT": str(download_timeout),
           # requests trusts only this file for the index and its file hosts.
           "REQUESTS_CA_BUNDLE": str(ca_file), "SSL_CERT_FILE": str(ca_file)}
    cmd = [str(gunicorn), "--preload", "--bind", f"127.0.0.1:{port}", "--workers", "1",
           "--threads", str(threads), "--access-logfile", "-",
           "--logger-class", "proxpi.server._GunicornLogger", "proxpi.server:app"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/"
    wait_ready(proc, http_ok(base + "health"), "proxpi", log)
    return Running("proxpi", proc, registry_url=base + "index/", workdir=workdir)
