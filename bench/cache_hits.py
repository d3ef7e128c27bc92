"""Cache-hit throughput and latency, through Mirrorgate or straight from a local HTTPS
file server (the physical limit), in one run.

    .venv/bin/python bench/cache_hits.py rps --via mirrorgate --concurrency 16 --requests 3000
    .venv/bin/python bench/cache_hits.py rps --via direct --concurrency 16 --requests 3000
    .venv/bin/python bench/cache_hits.py big --via mirrorgate --size 1g
    .venv/bin/python bench/cache_hits.py big --via direct --size 1g

`rps`: curl fetches a small cached artifact R times over N parallel keep-alive
connections; prints requests/s and p50/p99 latency. `big`: curl fetches one large cached artifact; prints
MB/s and the proxy's peak RSS. Through Mirrorgate the cache is warmed first, so every
measured request is a hit (checked). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.conftest import client_context  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.proxy import clean_env, start_proxy  # noqa: E402

SMALL = 4096


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the file server never listened on {host}:{port}") from None
            time.sleep(0.02)  # nginx is still starting; a benchmark may wait a moment


def size_arg(text: str) -> int:
    """A size such as 4096, 100m, 1g or 0.5g."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = units.get(text[-1].lower())
    return int(float(text[:-1]) * unit) if unit else int(text)


class Setup:
    """A file server (the mirror) with files on disk, and optionally Mirrorgate in front
    with a warm cache."""

    def __init__(self, via: str, big: int) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="mirrorgate-bench-"))
        self.pki = make_pki(self.work / "pki")
        files = self.work / "files"
        files.mkdir()
        (files / "small.bin").write_bytes(os.urandom(SMALL))
        if big:
            with open(files / "big.bin", "wb") as f:
                block = os.urandom(1 << 20)
                for _ in range(big >> 20):
                    f.write(block)
        # The file server runs in a process of its own, as a real one would.
        self.server = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "fileserver.py"), str(files), str(self.pki.cert),
             str(self.pki.key), "127.0.0.3"], stdout=subprocess.PIPE, text=True)
        line = self.server.stdout.readline()
        if not line.startswith("listening "):
            raise SystemExit("the file server did not start")
        self.mirror_url = f"https://127.0.0.3:{int(line.split()[1])}/"
        self.server_kind = line.split()[2]
        wait_for_port("127.0.0.3", int(line.split()[1]))
        # The origin is never contacted: every request is for a path the mirror has.
        self.origin_url = "https://127.0.0.2:9/"
        self.proxy = None
        if via == "mirrorgate":
            rules = self.work / "rules.yaml"
            rules.write_text(
                "version: 1\nprofiles: {bench: ''}\ndefault_profile: bench\nrules:\n"
                f"  - name: bench\n    match: {self.origin_url}\n    mirrors:\n      bench: [{self.mirror_url}]\n"
                "    cache:\n      artifacts: ['/files/**']\n")
            self.proxy = start_proxy(rules, self.work / "conf", self.pki.ca, "--set", "access_log=",
                                     cache_dir=self.work / "cache")
            self.base = self.origin_url
        else:
            self.base = self.mirror_url

    def client_kwargs(self) -> dict:
        cas = [self.proxy.ca, self.pki.ca] if self.proxy else [self.pki.ca]
        return {"verify": client_context(*cas), "trust_env": False, "timeout": 60,
                **({"proxy": self.proxy.url} if self.proxy else {})}

    def warm(self, *names: str) -> None:
        if not self.proxy:
            return
        with httpx.Client(**self.client_kwargs()) as c:
            for name in names:
                with c.stream("GET", self.base + "files/" + name) as r:
                    for _ in r.iter_raw():
                        pass
                r = c.head(self.base + "files/" + name)
                assert "cache=HIT" in r.headers["x-mirrorgate"], r.headers

    def close(self) -> None:
        if self.proxy:
            self.proxy.stop()
        self.server.terminate()
        self.server.wait(10)


def load(setup: Setup, concurrency: int, requests: int, http: str, proxy_url: str | None = None,
         prefix: Sequence[str] = ()) -> dict:
    """curl in parallel mode: `concurrency` keep-alive connections share `requests`
    transfers; curl reports each transfer's time. Through a proxy (Mirrorgate's, or
    `proxy_url` in front of Mirrorgate) every transfer must be a cache hit. `prefix`
    runs curl under another command (taskset)."""
    url = setup.base + "files/small.bin"
    bundle = setup.work / "cas.pem"
    bundle.write_text((setup.proxy.ca.read_text() if setup.proxy else "") + setup.pki.ca.read_text())
    config = setup.work / "transfers.curl"
    config.write_text(f'url = "{url}"\noutput = "/dev/null"\n' * requests)
    proxy = proxy_url or (setup.proxy.url if setup.proxy else None)
    cmd = [*prefix, "curl", "-sS", f"--http{http}", "-Z", "--parallel-max", str(concurrency), "--cacert", str(bundle),
           "-K", str(config), "-w", "%{http_code} %{size_download} %{time_total} %{num_connects} %header{x-mirrorgate}\n"]
    if proxy:
        cmd += ["-x", proxy]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600)
    elapsed = time.monotonic() - started
    rows = [line.split(maxsplit=4) for line in out.stdout.splitlines()]
    if len(rows) != requests or any(r[0] != "200" or int(r[1]) != SMALL for r in rows):
        raise SystemExit(f"failed transfers: {out.stderr[-500:]}")
    misses = [r[4] if len(r) > 4 else "" for r in rows if len(r) < 5 or "cache=HIT" not in r[4]] if proxy else []
    if misses:
        raise SystemExit(f"{len(misses)} of {requests} transfers were not cache hits, e.g. {misses[0]!r}")
    q = statistics.quantiles([float(r[2]) for r in rows], n=100)
    return {"requests": requests, "seconds": round(elapsed, 2), "rps": round(requests / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
            "connections": sum(int(r[3]) for r in rows)}


def big(setup: Setup, size: int) -> dict:
    bundle = setup.work / "cas.pem"
    bundle.write_text((setup.proxy.ca.read_text() if setup.proxy else "") + setup.pki.ca.read_text())
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", "--cacert", str(bundle)]
    if setup.proxy:
        cmd += ["--proxy", setup.proxy.url]
    out = subprocess.run(cmd + [setup.base + "files/big.bin"], capture_output=True, text=True, env=clean_env(),
                         timeout=600, check=True)
    got, seconds = out.stdout.split()
    if int(got) != size:
        raise SystemExit(f"short download: {got} of {size}")
    result = {"bytes": size, "seconds": float(seconds), "MB_per_s": round(size / float(seconds) / 1e6, 1)}
    if setup.proxy:
        result["proxy_peak_rss_MiB"] = round(setup.proxy.peak_rss_kib() / 1024, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("rps", "big"))
    ap.add_argument("--via", choices=("direct", "mirrorgate"), required=True)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--http", choices=("1.1", "2"), default="1.1", help="HTTP version the client speaks")
    ap.add_argument("--size", type=size_arg, default=1 << 30)
    args = ap.parse_args()
    setup = Setup(args.via, args.size if args.what == "big" else 0)
    try:
        if args.what == "rps":
            setup.warm("small.bin")
            result = load(setup, args.concurrency, args.requests, args.http)
            result.update(concurrency=args.concurrency, http=args.http)
        else:
            setup.warm("big.bin")
            result = big(setup, args.size)
        print(json.dumps({"what": args.what, "via": args.via, "server": setup.server_kind, **result}), flush=True)
    finally:
        setup.close()


if __name__ == "__main__":
    main()
