#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md, in one run of about 6 minutes (368 s on
# 2026-11-26) on the 2-core development machine. Not part of the test suite or CI.
#
#   bench/install_contenders.sh   # once: Squid, Verdaccio, proxpi (else they are skipped)
#   bench/run_all.sh              # prints each result and keeps it under bench/out/
#
# Each figure is one run; repeat for medians (docs/benchmarks.md says how the quoted
# ones were taken).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
out=bench/out
mkdir -p "$out"
run() {  # NAME COMMAND...: run, show and keep the output
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt"
}

run compare $py bench/compare.py
for c in 1 16 64; do
    for via in mirrorgate direct; do
        run "hits-$via-c$c" $py bench/cache_hits.py rps --via $via --concurrency $c --requests 3000
    done
done
for via in mirrorgate direct; do
    run "hits-$via-h2" $py bench/cache_hits.py rps --via $via --concurrency 16 --requests 3000 --http 2
    run "stream-$via" $py bench/stream.py --via $via --size 1g
    run "hit-1g-$via" $py bench/cache_hits.py big --via $via --size 1g
done
run circuit-refused $py bench/circuit.py --dead refused
run circuit-silent $py bench/circuit.py --dead silent
run scale $py bench/scale.py --rounds 3
