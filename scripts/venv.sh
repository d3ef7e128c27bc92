# Sourced by run_proxy.sh and run_tests.sh: makes sure a virtual environment exists and
# holds the project as pyproject.toml describes it now.
#
#   ensure_venv DIR PYTHON [EXTRA]    e.g. ensure_venv "$root/.venv" python3 test
#
# Sets VENV to DIR. Needs only the given Python (3.11 or newer).

ensure_venv() {
    local root dir python extra stamp sum want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    dir="$1" python="$2" extra="${3:-}"
    VENV="$dir"
    stamp="$dir/.mirrorgate-installed"
    sum="$(cksum < "$root/pyproject.toml" | cut -d' ' -f1)"
    want="$sum${extra:+[$extra]}"
    # The stamp lists what was installed for this pyproject.toml; any extra includes the base.
    if [ -f "$stamp" ] && { grep -qxF "$want" "$stamp" || { [ -z "$extra" ] && grep -q "^$sum" "$stamp"; }; }; then
        return 0
    fi
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "mirrorgate: $python (3.11 or newer) is needed and was not found on PATH" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "mirrorgate: $python is $("$python" -V 2>&1); 3.11 or newer is needed" >&2
        return 1
    fi
    if [ ! -x "$dir/bin/python" ]; then
        echo "mirrorgate: creating $dir (first run only)" >&2
        "$python" -m venv "$dir" || return 1
    fi
    echo "mirrorgate: installing the project into $dir" >&2
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root${extra:+[$extra]}" || return 1
    { grep "^$sum" "$stamp" 2>/dev/null; echo "$want"; } > "$stamp.new" && mv "$stamp.new" "$stamp"
}

# A Python >= 3.12 on this machine, where mitmproxy 12 installs, or nothing.
find_python312() {
    local c
    for c in python3.13 python3.12 "$(pyenv root 2>/dev/null)"/versions/3.1[2-9]*/bin/python; do
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}
