#!/usr/bin/env bash
# Run the whole test suite: ./run_tests.sh [pytest options…]
#
# Runs it on python3 (mitmproxy 11 on Python 3.11), then again on mitmproxy 12 when a
# Python >= 3.12 is on this machine, since Mirrorgate supports both. Each run keeps its
# own virtual environment (.venv, .venv-mitmproxy12), created on first use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/venv.sh
. "$here/scripts/venv.sh"

# Real clients the tests drive. .ci/run installs them on a fresh machine.
for tool in curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "run_tests.sh: the tests need '$tool' on PATH (Debian: apt-get install $tool)" >&2
        exit 1
    fi
done
cd "$here"

ensure_venv "$here/.venv" python3 test
echo "== mitmproxy $("$VENV/bin/python" -c 'import mitmproxy.version as v; print(v.VERSION)') on $("$VENV/bin/python" -V)"
"$VENV/bin/python" -m pytest "$@"

if py312="$(find_python312)"; then
    ensure_venv "$here/.venv-mitmproxy12" "$py312" test
    echo "== mitmproxy $("$VENV/bin/python" -c 'import mitmproxy.version as v; print(v.VERSION)') on $("$VENV/bin/python" -V)"
    "$VENV/bin/python" -m pytest "$@"
else
    echo "== no Python >= 3.12 found: mitmproxy 12 not tested on this machine"
fi
