"""Mirrorgate against what users would pick instead, side by side in one run, over a
simulated WAN (origin far and slow, mirror near and fast), with real clients.

    .venv/bin/python bench/compare.py                      # everything, ~10 min
    .venv/bin/python bench/compare.py --workloads npm,pip  # some workloads
    .venv/bin/python bench/compare.py --origin 150:2M --mirror 15:40M --big-size 256m

For each workload (bench/workloads.py) and each way of reaching the packages:

    origin          the client's defaults: straight to the registry
    mirror          the client configured for the mirror (chsrc, nrm, GOPROXY=)
    mirrorgate      HTTPS_PROXY=Mirrorgate, cold cache, then warm (fresh client caches)
    mitmdump        HTTPS_PROXY=plain `mitmdump --map-remote origin→mirror`
    verdaccio       npm only: registry=Verdaccio, uplink the mirror; cold, then warm
    pypi-cache      pip only: index=proxpi in front of the mirror; cold, then warm
    squid           HTTPS_PROXY=Squid with ssl_bump, client configured for the mirror;
                    cold, then warm

it prints the wall time, its ratio to `mirror` from the same round, the proxy's CPU
seconds and peak RSS, and how many requests the origin and mirror servers received.
Contenders that are not installed (bench/install_contenders.sh) are skipped with a note.
With --rounds N the whole matrix runs N times; figures are medians over the rounds,
ratios the median of each round's own ratio. Writes bench/out/compare.json too.

Not part of the test suite: it takes minutes and its figures are for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workloads as wl  # noqa: E402
from bench.cache_hits import size_arg  # noqa: E402
from bench.contenders import Running  # noqa: E402
from bench.contenders import mirrorgate as mirrorgate_contender  # noqa: E402
from bench.contenders import mitmdump as mitmdump_contender  # noqa: E402
from tests.support.fakes import LoopThread  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402

WAN_READY = 30.0


def link_arg(text: str) -> tuple[float, str]:
    rtt, rate = text.split(":")
    return float(rtt), rate


class Wan:
    """bench/wan.py in a process of its own, forwarding to every workload's fakes."""

    def __init__(self, origin: tuple[float, str], mirror: tuple[float, str], forwards: dict[str, tuple[str, int, str]]):
        cmd = [sys.executable, str(ROOT / "bench" / "wan.py"),
               "--link", f"origin:{origin[0]:g}:{origin[1]}", "--link", f"mirror:{mirror[0]:g}:{mirror[1]}"]
        for name, (host, port, link) in forwards.items():
            cmd += ["--forward", f"{name}:{host}:{port}:{link}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.ports: dict[str, int] = {}
        # A simulator that hangs silently is killed, which ends the reading below.
        watchdog = threading.Timer(WAN_READY, self.proc.kill)
        watchdog.start()
        for line in self.proc.stdout:
            if line.startswith("forward "):
                _, name, port = line.split()
                self.ports[name] = int(port)
            elif line.strip() == "ready":
                break
        watchdog.cancel()
        if len(self.ports) != len(forwards) or self.proc.poll() is not None:
            self.stop()
            raise SystemExit("the WAN simulator did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Row:
    workload: str
    way: str
    seconds: float | None = None
    cpu_s: float | None = None
    rss_mib: float | None = None
    origin_requests: int | None = None
    mirror_requests: int | None = None
    note: str = ""


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="mirrorgate-compare-"))
        self.pki = make_pki(self.work / "pki")
        self.loops = LoopThread()
        self.workloads = self._workloads()
        for w in self.workloads:
            w.start(self.loops, self.pki)
        forwards = {f"{w.name}-{name}": (w.host[1], site.fake.port, site.link)
                    for w in self.workloads for name, site in w.sites.items()}
        self.wan = Wan(args.origin, args.mirror, forwards)
        for w in self.workloads:
            w.shaped(self.wan.ports)
        self.runs = 0

    def _workloads(self) -> list[wl.Workload]:
        make = {"npm": lambda: wl.Npm(count=self.args.npm_packages), "pip": lambda: wl.Pip(count=self.args.pip_wheels),
                "go": lambda: wl.Go(count=self.args.go_modules, maxprocs=self.args.go_maxprocs), "big": lambda: wl.Big(size=self.args.big_size)}
        return [make[name]() for name in self.args.workloads]

    def close(self) -> None:
        self.wan.stop()
        self.loops.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def _dir(self, label: str) -> Path:
        self.runs += 1
        d = self.work / f"{self.runs:03d}-{label}"
        d.mkdir()
        return d

    def bundle(self, extra: Path | None) -> Path:
        path = self.work / f"cas-{self.runs}.pem"
        path.write_text(self.pki.ca.read_text() + (extra.read_text() if extra else ""))
        return path

    def measure(self, w: wl.Workload, way: str, target: wl.Target, proxy: Running | None) -> Row:
        work = self._dir(f"{w.name}-{way}")
        client = wl.Client(target, proxy.proxy_url if proxy else None, self.bundle(proxy.extra_ca if proxy else None))
        before = w.upstream_requests()
        if proxy:
            proxy.reset()
        started = time.monotonic()
        try:
            w.run(client, work)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"  {w.name} via {way} FAILED: {e}", file=sys.stderr, flush=True)
            return Row(w.name, way, note=f"failed: {str(e).splitlines()[0][:80]}")
        seconds = time.monotonic() - started
        after = w.upstream_requests()
        upstream = {k: after[k] - before[k] for k in after}
        row = Row(w.name, way, round(seconds, 2),
                  origin_requests=sum(v for k, v in upstream.items() if k != "mirror"),
                  mirror_requests=upstream.get("mirror", 0))
        if proxy:
            usage = proxy.usage()
            row.cpu_s, row.rss_mib = usage.cpu_s, usage.peak_rss_mib
        shutil.rmtree(work, ignore_errors=True)  # the client's caches: the next run starts empty
        print(f"  {w.name:4} {way:18} {row.seconds:8.2f} s  cpu {row.cpu_s}  rss {row.rss_mib}  "
              f"origin {row.origin_requests} mirror {row.mirror_requests}", flush=True)
        return row

    def cold_warm(self, w: wl.Workload, label: str, start: Callable[[Path], Running],
                  target: wl.Target | Callable[[Running], wl.Target]) -> list[Row]:
        try:
            running = start(self._dir(f"{w.name}-{label}-server"))
        except (RuntimeError, FileNotFoundError, OSError, SystemExit) as e:
            print(f"  {w.name} {label}: not run: {e}", file=sys.stderr, flush=True)
            return [Row(w.name, label, note=f"not run: {str(e).splitlines()[0][:100]}")]
        try:
            t = target(running) if callable(target) else target
            return [self.measure(w, f"{label} cold", t, running), self.measure(w, f"{label} warm", t, running)]
        finally:
            running.stop()

    def round(self) -> list[Row]:
        rows: list[Row] = []
        ca = self.pki.ca
        for w in self.workloads:
            print(f"{w.name}: {w.describe()}", flush=True)
            if w.name != "big" or self.args.big_from_origin:
                rows.append(self.measure(w, "origin", wl.Target("origin"), None))
            else:
                rows.append(Row(w.name, "origin", note="not run: --big-from-origin"))
            rows.append(self.measure(w, "mirror", wl.Target("mirror"), None))
            rules = "version: 1\nprofiles: {bench: ''}\ndefault_profile: bench\nrules:\n" + w.rules()
            rows += self.cold_warm(w, "mirrorgate", lambda d: mirrorgate_contender.start(d, rules, ca),
                                   wl.Target("origin"))
            mm = self.one_shot(w, "mitmdump", lambda d: mitmdump_contender.start(d, w.map_remote(), ca),
                               wl.Target("origin"))
            rows.append(mm)
            rows += self.specialised(w)
        return rows

    def one_shot(self, w: wl.Workload, label: str, start: Callable[[Path], Running], target: wl.Target) -> Row:
        running = start(self._dir(f"{w.name}-{label}-server"))
        try:
            return self.measure(w, label, target, running)
        finally:
            running.stop()

    def specialised(self, w: wl.Workload) -> list[Row]:
        """The caches users pick for one ecosystem, and Squid for all of them."""
        rows: list[Row] = []
        mirror = w.sites["mirror"].url
        wanted = [("verdaccio", "npm", lambda m, d: m.start(d, mirror, self.pki.ca)),
                  ("pypi_cache", "pip", lambda m, d: m.start(d, mirror + "pypi/web/simple/", self.pki.ca)),
                  ("squid", None, lambda m, d: m.start(d, self.pki.ca))]
        for module_name, only, start in wanted:
            label = module_name.replace("_", "-")
            if label not in self.args.contenders or only not in (None, w.name):
                continue
            try:
                module = importlib.import_module(f"bench.contenders.{module_name}")
            except ImportError as e:
                rows.append(Row(w.name, label, note=f"not run: {e}"))
                continue
            # Registry-style caches are the client's registry; Squid is its proxy to the mirror.
            target = (lambda r: wl.Target("registry", r.registry_url)) if only else wl.Target("mirror")
            rows += self.cold_warm(w, label, lambda d, m=module, s=start: s(m, d), target)
        return rows


def summarise(rounds: list[list[Row]]) -> list[dict]:
    """Medians over rounds; each ratio is to the same round's `mirror` time."""
    out = []
    for i, first in enumerate(rounds[0]):
        same = [r[i] for r in rounds]
        done = [r for r in same if r.seconds is not None]
        mirror = [next((m for m in rnd if m.workload == first.workload and m.way == "mirror"), None) for rnd in rounds]
        ratios = [r.seconds / m.seconds for r, m in zip(same, mirror) if r.seconds and m and m.seconds]

        def med(attr):
            vals = [getattr(r, attr) for r in done if getattr(r, attr) is not None]
            return round(statistics.median(vals), 2) if vals else None
        out.append({"workload": first.workload, "way": first.way, "seconds": med("seconds"),
                    "ratio_to_mirror": round(statistics.median(ratios), 2) if ratios else None,
                    "cpu_s": med("cpu_s"), "peak_rss_mib": med("rss_mib"),
                    "origin_requests": med("origin_requests"), "mirror_requests": med("mirror_requests"),
                    "runs": len(done), "note": next((r.note for r in same if r.note), "")})
    return out


def table(summary: list[dict]) -> str:
    lines = ["| workload | way | wall s | × mirror | proxy CPU s | proxy peak RSS MiB | origin / mirror requests |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        def f(v, fmt="{:.2f}"):
            return "—" if v is None else fmt.format(v)
        reqs = "—" if s["origin_requests"] is None else f"{s['origin_requests']:g} / {s['mirror_requests']:g}"
        lines.append(f"| {s['workload']} | {s['way']} | {f(s['seconds']) if s['seconds'] is not None else s['note']} "
                     f"| {f(s['ratio_to_mirror'])} | {f(s['cpu_s'])} | {f(s['peak_rss_mib'], '{:.0f}')} | {reqs} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="npm,pip,go,big", type=lambda s: s.split(","))
    ap.add_argument("--contenders", default="verdaccio,pypi-cache,squid", type=lambda s: s.split(","),
                    help="specialised caches to include, if installed")
    ap.add_argument("--origin", type=link_arg, default=(150.0, "2M"), metavar="RTT_MS:RATE",
                    help="the origin's link (default 150:2M: 150 ms round trip, 2 MB/s)")
    ap.add_argument("--mirror", type=link_arg, default=(15.0, "40M"), metavar="RTT_MS:RATE",
                    help="the mirror's link (default 15:40M)")
    ap.add_argument("--npm-packages", type=int, default=300)
    ap.add_argument("--pip-wheels", type=int, default=40)
    ap.add_argument("--go-modules", type=int, default=50)
    ap.add_argument("--go-maxprocs", type=int, default=None,
                    help="GOMAXPROCS for the go command, which downloads that many modules at a time "
                         "(default: its own, the number of cores)")
    ap.add_argument("--big-size", type=size_arg, default=1 << 30)
    ap.add_argument("--big-from-origin", action="store_true",
                    help="also fetch the large artifact from the origin (1 GiB at 2 MB/s is ~9 minutes)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    unknown = set(args.workloads) - {"npm", "pip", "go", "big"}
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))} (choose from npm, pip, go, big)")

    import mitmproxy.version
    started = time.monotonic()
    bench = Bench(args)
    try:
        print(f"origin link {args.origin[0]:g} ms / {args.origin[1]}B/s, mirror link {args.mirror[0]:g} ms / "
              f"{args.mirror[1]}B/s; Python {platform.python_version()}, mitmproxy {mitmproxy.version.VERSION}",
              flush=True)
        rounds = []
        for n in range(args.rounds):
            print(f"round {n + 1} of {args.rounds}", flush=True)
            rounds.append(bench.round())
    finally:
        bench.close()
    summary = summarise(rounds)
    print()
    print(table(summary))
    print(f"\n{args.rounds} round(s) in {time.monotonic() - started:.0f} s")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                                  "summary": summary}, indent=2, default=str))


if __name__ == "__main__":
    main()
