#!/usr/bin/env bash
# Installs what the benchmarks need beyond the test suite (HAProxy for bench/scale.py) and
# the caches the benchmark compares Mirrorgate with: Squid (with ssl_bump, from
# Debian's squid-openssl), Verdaccio (npm, under bench/.tools/verdaccio) and proxpi (PyPI,
# in its own venv bench/.tools/pypi-cache-venv so its Flask/requests cannot clash with
# the project's). Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"
tools="$PWD/.tools"
mkdir -p "$tools"

if ! command -v squid >/dev/null || ! dpkg -s squid-openssl >/dev/null 2>&1 || ! command -v haproxy >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update
    # HAProxy is the L4 balancer of bench/scale.py. Debian starts the packaged services
    # on install; the benchmarks run their own.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends squid-openssl haproxy
    for service in squid haproxy; do
        $sudo systemctl disable --now $service 2>/dev/null || $sudo service $service stop 2>/dev/null || true
    done
fi

if [ ! -x "$tools/verdaccio/node_modules/.bin/verdaccio" ]; then
    mkdir -p "$tools/verdaccio"
    # verdaccio-audit asks for node-fetch by its "cjs" dist-tag; a registry (or mirror of
    # one) that keeps only "latest" cannot resolve that, so pin what the tag points at.
    [ -f "$tools/verdaccio/package.json" ] || cat >"$tools/verdaccio/package.json" <<'JSON'
{"private": true, "overrides": {"node-fetch": "^2.7.0"}}
JSON
    npm install --prefix "$tools/verdaccio" --no-audit --no-fund verdaccio@6
fi

venv="$tools/pypi-cache-venv"
if ! "$venv/bin/python" -c 'import proxpi, gunicorn' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --disable-pip-version-check --quiet proxpi gunicorn
fi
echo "contenders installed under $tools (and squid from Debian)"
