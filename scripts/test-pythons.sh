#!/usr/bin/env bash
# The unit and protocol tests under other CPythons than the one build.sh's .venv has, so code
# that only a newer (or only an older) interpreter accepts cannot land. Each version gets its own
# venv in .cache/venvs/, made from this machine's pyenv interpreter of that version and
# reinstalled only when pyproject.toml changes.
#
#   scripts/test-pythons.sh [VERSION...] [-- PYTEST ARGS]      default versions: 3.10 3.13
#
# Prints one line per version and a final `N passed, M failed` (versions, not tests).
set -euo pipefail
cd "$(dirname "$0")/.."

versions=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    versions+=("$1")
    shift
done
[ "${1:-}" = -- ] && shift
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.13)
PYENV_VERSIONS=${PYENV_VERSIONS:-/root/.pyenv/versions}

# The newest installed patch release of one minor version, e.g. 3.10 -> .../3.10.13/bin/python.
interpreter() {
    local found
    found=$(ls -d "$PYENV_VERSIONS/$1".*/bin/python 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] || { echo "test-pythons: no CPython $1 in $PYENV_VERSIONS" >&2; return 1; }
    echo "$found"
}

ensure_venv() {
    local version=$1 venv=.cache/venvs/$1 python stamp want
    python=$(interpreter "$version") || return 1
    stamp=$venv/.krnet-deps
    want="$("$python" --version) $(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> installing krnet and its development dependencies into $venv" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel 2>&1 |
            grep -v "^WARNING: Location" >&2 || true
        "$venv/bin/python" -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" >&2 || true
        "$venv/bin/python" -c 'import krnet, pytest' || return 1
        echo "$want" >"$stamp"
    fi
}

passed=0 failed=0
for version in "${versions[@]}"; do
    started=$SECONDS
    if ensure_venv "$version" &&
        ".cache/venvs/$version/bin/python" -m pytest tests/unit tests/protocol -q "$@"; then
        echo "PASS  CPython $version: unit and protocol tests ($((SECONDS - started)) s)"
        passed=$((passed + 1))
    else
        echo "FAIL  CPython $version: unit and protocol tests ($((SECONDS - started)) s)"
        failed=$((failed + 1))
    fi
done
echo "pythons: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
