"""Cache hits through 1 or 2 Mirrorgate processes behind HAProxy (tcp mode): does a
second process buy throughput?

    .venv/bin/python bench/scale.py                  # 1 warm-up + 5 rounds of N=1, N=2 at 16 and 64 clients
    .venv/bin/python bench/scale.py --pin            # curl, HAProxy, nginx on CPU 0; the proxies on CPU 1
    .venv/bin/python bench/scale.py --rounds 7 --concurrency 16 --balance roundrobin

The mirror is bench/cache_hits.py's nginx file server (idle here: every answer is a hit).
Two Mirrorgate processes share one confdir (one CA, so clients trust both) and each has its
own cache_dir: one cache_dir is not safe for two processes yet (each one's start-up
recovery deletes the other's fills in progress; usage and eviction are counted per
process). Both are warmed, and every measured response must say cache=HIT. HAProxy sits
in front for N=1 too, so its cost is in both; the second proxy then idles. curl in
parallel mode drives it like `cache_hits.py rps`: C keep-alive connections, each a
CONNECT tunnel that HAProxy keeps on one process, sharing R transfers of a 4 KiB
artifact. Runs alternate N=1, N=2 per round; one JSON line per run, then one summary line
per concurrency with medians and the N=2/N=1 ratio. `others_cpu_s` is what the rest of
the (shared) machine used meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cache_hits import Setup, load  # noqa: E402
from bench.contenders import CLK_TCK, cpu_seconds  # noqa: E402
from bench.haproxy import Balancer  # noqa: E402
from tests.support.proxy import ProxyProcess, clean_env, start_proxy  # noqa: E402

# With --pin: the load side (curl, HAProxy, the nginx mirror) on one core, the proxies on
# the other, so that the proxies' share of the machine is fixed.
LOAD_CPU, PROXY_CPU = "0", "1"


def pin(pid: int, cpu: str) -> None:
    """Every thread of a running process, not only its first."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {int(cpu)})


def machine_busy_seconds() -> float:
    """CPU seconds spent by anything on the machine (other benchmarks share it)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(setup: Setup, proxies: list[ProxyProcess], balancer: Balancer, concurrency: int,
        requests: int, pinned: bool) -> dict:
    watched = {"nginx": setup.server.pid, "haproxy": balancer.proc.pid} | {
        f"proxy{i}": p.proc.pid for i, p in enumerate(proxies)}
    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    curl_before, busy_before = children_cpu_seconds(), machine_busy_seconds()
    result = load(setup, concurrency, requests, "1.1", balancer.url, ["taskset", "-c", LOAD_CPU] if pinned else [])
    used = {name: round(cpu_seconds(pid) - before[name], 2) for name, pid in watched.items()}
    curl = round(children_cpu_seconds() - curl_before, 2)
    busy = round(machine_busy_seconds() - busy_before, 2)
    if not balancer.alive() or any(p.proc.poll() is not None for p in proxies):
        raise SystemExit("a proxy or HAProxy died during the run")
    ours = sum(used.values()) + curl
    return {**result,
            "proxy_cpu_s": [used[f"proxy{i}"] for i in range(len(proxies))],
            "haproxy_cpu_s": used["haproxy"], "nginx_cpu_s": used["nginx"], "curl_cpu_s": curl,
            # What else ran meanwhile: other people's benchmarks on this shared machine.
            "machine_cpu_s": busy, "others_cpu_s": round(max(0.0, busy - ours), 2)}


def summarise(runs: list[dict], concurrency: int) -> dict:
    """Medians per process count, and the N=2/N=1 throughput ratio. CPU per hit and cores
    used hold still when other work on the machine moves req/s about."""
    by_n = {n: [r for r in runs if r["processes"] == n and r["concurrency"] == concurrency] for n in (1, 2)}
    pairwise = [b["rps"] / a["rps"] for a, b in zip(by_n[1], by_n[2])]
    out = {"summary": True, "concurrency": concurrency, "rounds": len(pairwise),
           "ratio_of_medians": round(statistics.median(r["rps"] for r in by_n[2])
                                     / statistics.median(r["rps"] for r in by_n[1]), 3),
           "median_pairwise_ratio": round(statistics.median(pairwise), 3),
           "pairwise_ratios": [round(x, 3) for x in pairwise]}
    for n, rs in by_n.items():
        figures = {
            "rps": [r["rps"] for r in rs], "p50_ms": [r["p50_ms"] for r in rs], "p99_ms": [r["p99_ms"] for r in rs],
            "proxy_ms_per_hit": [1000 * sum(r["proxy_cpu_s"]) / r["requests"] for r in rs],
            "haproxy_ms_per_hit": [1000 * r["haproxy_cpu_s"] / r["requests"] for r in rs],
            "proxy_cores": [sum(r["proxy_cpu_s"]) / r["seconds"] for r in rs],
            "others_cores": [r["others_cpu_s"] / r["seconds"] for r in rs]}
        out |= {f"{k}_{n}": round(statistics.median(v), 3) for k, v in figures.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds, each N=1 then N=2")
    ap.add_argument("--warmup", type=int, default=1, help="rounds run first and left out of the summary")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--balance", choices=("leastconn", "roundrobin"), default="leastconn")
    ap.add_argument("--pin", action="store_true", help=f"curl, HAProxy, nginx on CPU {LOAD_CPU}; proxies on CPU {PROXY_CPU}")
    args = ap.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--pin needs two CPUs")

    setup = Setup("mirrorgate", 0)  # the mirror, and the first proxy with its own cache
    proxies = [setup.proxy]
    balancers: dict[int, Balancer] = {}
    try:
        # Started after the first has written the CA: two processes creating one confdir's
        # CA at once can each sign with a different key (mitmproxy certs.py from_store).
        proxies.append(start_proxy(setup.work / "rules.yaml", setup.work / "conf", setup.pki.ca,
                                   "--set", "access_log=", cache_dir=setup.work / "cache-1"))
        for proxy in proxies:  # Setup.warm warms and checks through its own proxy
            setup.proxy = proxy
            setup.warm("small.bin")
        # load() trusts this proxy's CA, which is every process's (one confdir): curl would
        # fail the TLS handshake on any process that signed with another.
        setup.proxy = proxies[0]
        if args.pin:
            pin(setup.server.pid, LOAD_CPU)
            for proxy in proxies:
                pin(proxy.proc.pid, PROXY_CPU)
            os.sched_setaffinity(0, {int(LOAD_CPU)})
        balancers = {n: Balancer([p.port for p in proxies[:n]], setup.work, args.balance,
                                 LOAD_CPU if args.pin else None) for n in (1, 2)}
        runs = []
        for round_ in range(args.warmup + args.rounds):
            for concurrency in args.concurrency:
                for n in (1, 2):
                    result = run(setup, proxies[:n], balancers[n], concurrency, args.requests, args.pin)
                    line = {"processes": n, "concurrency": concurrency, "balance": args.balance,
                            "pinned": args.pin, "round": round_, "warmup": round_ < args.warmup, **result}
                    print(json.dumps(line), flush=True)
                    if round_ >= args.warmup:
                        runs.append(line)
        for concurrency in args.concurrency:
            print(json.dumps({"balance": args.balance, "pinned": args.pin, **summarise(runs, concurrency)}),
                  flush=True)
    finally:
        for b in balancers.values():
            b.stop()
        for proxy in proxies[1:]:
            proxy.stop()
        setup.close()


if __name__ == "__main__":
    main()
