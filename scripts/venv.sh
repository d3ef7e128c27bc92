# Sourced by run_proxy.sh and run_tests.sh: makes sure .venv exists and holds the
# project as pyproject.toml describes it now. Needs only python3 (>= 3.11) on PATH.
# Usage: ensure_venv [extra]     e.g. ensure_venv test

ensure_venv() {
    local root extra stamp sum want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    extra="${1:-}"
    VENV="$root/.venv"
    stamp="$VENV/.mirrorgate-installed"
    sum="$(cksum < "$root/pyproject.toml" | cut -d' ' -f1)"
    want="$sum${extra:+[$extra]}"
    # The stamp lists what was installed for this pyproject.toml; any extra includes the base.
    if [ -f "$stamp" ] && { grep -qxF "$want" "$stamp" || { [ -z "$extra" ] && grep -q "^$sum" "$stamp"; }; }; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "mirrorgate: python3 (3.11 or newer) is needed and was not found on PATH" >&2
        return 1
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "mirrorgate: python3 is $(python3 -V 2>&1); 3.11 or newer is needed" >&2
        return 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "mirrorgate: creating $VENV (first run only)" >&2
        python3 -m venv "$VENV" || return 1
    fi
    echo "mirrorgate: installing the project into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root${extra:+[$extra]}" || return 1
    { grep "^$sum" "$stamp" 2>/dev/null; echo "$want"; } > "$stamp.new" && mv "$stamp.new" "$stamp"
}
