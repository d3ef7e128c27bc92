"""One streaming run: download a large artifact over HTTPS with curl, either straight
from a loopback HTTPS file server or through Mirrorgate with that server as the mirror.

    .venv/bin/python bench/stream.py --via mirrorgate --size 1g
    .venv/bin/python bench/stream.py --via direct --size 1g

Prints one JSON line: bytes, seconds, MB/s and, through Mirrorgate, the proxy's peak
RSS (VmHWM). Run it several times and quote the median; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fakes import Fake, LoopThread, server_tls  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.proxy import clean_env, start_proxy  # noqa: E402

UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_arg(text: str) -> int:
    text = text.lower()
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--via", choices=("direct", "mirrorgate"), required=True)
    ap.add_argument("--size", type=size_arg, default=1 << 30, help="e.g. 100m, 1g (default 1g)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mirrorgate-bench-"))
    pki = make_pki(work / "pki")
    loops = LoopThread()
    tls = server_tls(str(pki.cert), str(pki.key))
    origin = Fake(loops, "origin", "127.0.0.2", tls).start()
    mirror = Fake(loops, "mirror", "127.0.0.3", tls).start()
    mirror.pattern("/artifact.bin", args.size)
    proxy = None
    try:
        cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
        if args.via == "mirrorgate":
            rules = work / "rules.yaml"
            rules.write_text(
                "version: 1\nprofiles: {bench: ''}\ndefault_profile: bench\nrules:\n"
                f"  - name: bench\n    match: {origin.url}\n    mirrors:\n      bench: [{mirror.url}]\n")
            proxy = start_proxy(rules, work / "conf", pki.ca, "--set", "access_log=")
            bundle = proxy.trust_bundle(pki.ca, work / "cas.pem")
            cmd += ["--proxy", proxy.url, "--cacert", str(bundle), origin.url + "artifact.bin"]
        else:
            cmd += ["--cacert", str(pki.ca), mirror.url + "artifact.bin"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600, check=True)
        size, seconds = out.stdout.split()
        result = {"via": args.via, "bytes": int(size), "seconds": float(seconds),
                  "MB_per_s": round(int(size) / float(seconds) / 1e6, 1)}
        if int(size) != args.size:
            raise SystemExit(f"short download: {size} of {args.size} bytes")
        if proxy is not None:
            result["proxy_peak_rss_MiB"] = round(proxy.peak_rss_kib() / 1024, 1)
        print(json.dumps(result), flush=True)
    finally:
        if proxy is not None:
            proxy.stop()
        origin.stop()
        mirror.stop()
        loops.stop()


if __name__ == "__main__":
    started = time.monotonic()
    main()
