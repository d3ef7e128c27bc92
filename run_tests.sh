#!/usr/bin/env bash
# Run the whole test suite: ./run_tests.sh [pytest options…]
# Creates .venv on first use, as run_proxy.sh does, with the test extras.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/venv.sh
. "$here/scripts/venv.sh"
ensure_venv test
# Real clients the tests drive. .ci/run installs them on a fresh machine.
for tool in curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "run_tests.sh: the tests need '$tool' on PATH (Debian: apt-get install $tool)" >&2
        exit 1
    fi
done
cd "$here"
exec "$VENV/bin/python" -m pytest "$@"
