"""What a dead mirror costs each request, before and after its circuit opens.

    .venv/bin/python bench/circuit.py --dead refused    # nothing listens: connect refused
    .venv/bin/python bench/circuit.py --dead silent     # accepts, never answers: timeout

Two Mirrorgate processes serve the same uncached requests (so every one goes upstream)
from a healthy loopback mirror; in one, a dead mirror comes first in the rule. One
client sends R sequential requests on one kept-alive connection through each. Printed:
the healthy proxy's median latency, the dead-first proxy's latency for the requests
that met a closed circuit (each pays the failure), and its median once the circuit is
open, which should match the healthy median (the time a dead mirror adds then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.conftest import client_context  # noqa: E402
from tests.support.fakes import Fake, LoopThread, closed_port, server_tls  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.proxy import start_proxy  # noqa: E402

FAILURES = 3  # the rule's circuit.failures


def silent_port(loops: LoopThread) -> int:
    """A server that accepts connections and never says a word: the TLS handshake waits
    for the rule's connect timeout."""
    async def start() -> int:
        async def hold(reader, writer):
            await reader.read()  # until the proxy gives up and closes
            writer.close()
        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]
    return loops.run(start())


def rules(origin: str, mirrors: list[str]) -> str:
    return ("version: 1\nprofiles: {bench: ''}\ndefault_profile: bench\nrules:\n"
            f"  - name: bench\n    match: {origin}\n    mirrors:\n      bench: [{', '.join(mirrors)}]\n"
            "    timeouts: {connect: 1s, first_byte: 5s}\n"
            f"    circuit: {{failures: {FAILURES}, cooldown: 10m}}\n")


def latencies(proxy, ca_files, url: str, count: int) -> list[float]:
    out = []
    with httpx.Client(proxy=proxy.url, verify=client_context(*ca_files), trust_env=False, timeout=30) as c:
        for _ in range(count):
            started = time.perf_counter()
            r = c.get(url)
            out.append(time.perf_counter() - started)
            if r.status_code != 200:
                raise SystemExit(f"{url}: {r.status_code} {r.headers.get('x-mirrorgate')}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dead", choices=("refused", "silent"), default="refused")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mirrorgate-circuit-"))
    pki = make_pki(work / "pki")
    loops = LoopThread()
    mirror = Fake(loops, "mirror", tls=server_tls(str(pki.cert), str(pki.key))).start()
    mirror.fallback = _answer  # every path: 4 KiB
    dead_port = closed_port() if args.dead == "refused" else silent_port(loops)
    dead = f"https://127.0.0.1:{dead_port}/"
    origin = "https://127.0.0.2:9/"  # never reached: the healthy mirror answers
    healthy_rules, dead_rules = work / "healthy.yaml", work / "dead.yaml"
    healthy_rules.write_text(rules(origin, [mirror.url]))
    dead_rules.write_text(rules(origin, [dead, mirror.url]))
    proxies = {name: start_proxy(path, work / f"conf-{name}", pki.ca, "--set", "access_log=",
                                 cache_dir=work / f"cache-{name}")
               for name, path in (("healthy", healthy_rules), ("dead", dead_rules))}
    try:
        result = {}
        for name, p in proxies.items():
            result[name] = latencies(p, [p.ca, pki.ca], origin + "x.bin", args.requests)
        healthy = statistics.median(result["healthy"][FAILURES:])
        meeting = result["dead"][:FAILURES]
        after = statistics.median(result["dead"][FAILURES:])
        print(json.dumps({
            "dead": args.dead, "requests": args.requests,
            "healthy_median_ms": round(healthy * 1000, 2),
            "closed_circuit_ms": [round(x * 1000, 1) for x in meeting],
            "open_circuit_median_ms": round(after * 1000, 2),
            "added_per_request_ms": round((after - healthy) * 1000, 2)}))
    finally:
        for p in proxies.values():
            p.stop()
        mirror.stop()
        loops.stop()


async def _answer(request):
    from aiohttp import web
    return web.Response(body=b"x" * 4096)


if __name__ == "__main__":
    main()
