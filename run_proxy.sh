#!/usr/bin/env bash
# Start Mirrorgate on 127.0.0.1:8080 with rules/default.yaml.
#   ./run_proxy.sh [mitmdump options…]
# Every argument is passed to mitmdump unchanged, e.g.
#   ./run_proxy.sh --listen-host 0.0.0.0 --set profile=direct --set confdir=/srv/mirrorgate
# except for one subcommand, which prints what a client machine needs (no proxy need run):
#   ./run_proxy.sh env [--proxy URL] [--confdir DIR] [--no-proxy HOST,…] [--format sh|fish|powershell|json]
#   eval "$(./run_proxy.sh env)"          (docs/client-setup.md)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/venv.sh
. "$here/scripts/venv.sh"
ensure_venv "$here/.venv" python3
if [ "${1:-}" = env ]; then
    shift
    exec "$VENV/bin/python" -m mirrorgate.clientenv "$@"
fi
# Defaults go first so that the caller's own options win.
exec "$VENV/bin/python" -m mirrorgate --listen-host 127.0.0.1 --listen-port 8080 "$@"
