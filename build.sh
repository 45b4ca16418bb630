#!/usr/bin/env bash
# Build dist/krnet.pyz (one self-contained zipapp) from a fresh clone; `./build.sh test` also runs
# the whole suite. As root on Debian it first installs the system packages the tests need.
#
#   ./build.sh                      build for this machine's python3
#   ./build.sh test [PYTEST ARGS]   build, type-check (mypy), then run the tests against the source
#                                   and the zipapp
#   KRNET_TARGETS=3.11-x86_64 ./build.sh
#                                   a smaller zipapp for some targets only (default: every
#                                   CPython 3.10-3.14 on x86_64 and aarch64, see zipapp.lock)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
SYSTEM_PACKAGES=(iproute2 iptables ipset nftables iputils-ping docker.io busybox-static iperf3 tmux debootstrap hyperfine
    firewalld prometheus qemu-user-static)
# shiv stamps every file with this time, so two builds of one commit are byte-identical.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}

step() { printf '==> %s\n' "$*" >&2; }

install_system_packages() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
    local missing=()
    for package in "${SYSTEM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing system packages: ${missing[*]}"
    apt-get update -qq
    # With recommends, as on the machines the suite was proven on.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        step "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when the declared dependencies change.
    local stamp="$VENV/.krnet-deps" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        step "installing krnet and its development dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel
        "$VENV/bin/python" -m pip install -q -e '.[dev]'
        echo "$want" >"$stamp"
    fi
}

build_zipapp() {
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p dist
    step "building the krnet wheel"
    # setuptools' scratch dir keeps files of earlier builds, which would land in the wheel.
    rm -rf build
    "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$work" . >/dev/null
    step "fetching the wheels in zipapp.lock for ${KRNET_TARGETS:-every target} and staging them"
    "$VENV/bin/python" scripts/zipapp_wheels.py stage "$work/site" "$work"/krnet-*.whl
    step "building dist/krnet.pyz with shiv"
    # The entry point checks the interpreter before anything imports a dependency.
    "$VENV/bin/shiv" --compressed --reproducible --site-packages "$work/site" \
        -e krnet.boot:main -p '/usr/bin/env python3' -o dist/krnet.pyz >/dev/null
    step "dist/krnet.pyz: $(du -h dist/krnet.pyz | cut -f1), sha256 $(sha256sum dist/krnet.pyz | cut -c1-16)"
}

run_tests() {
    # The whole package, strict (configured in pyproject.toml): a type error fails the build
    # before any test runs.
    step "type-checking krnet with mypy --strict"
    "$VENV/bin/mypy"
    step "running the tests"
    "$VENV/bin/python" -m pytest "$@"
}

main() {
    install_system_packages
    ensure_venv
    build_zipapp
    if [ "${1:-}" = test ]; then
        shift
        run_tests "$@"
    fi
}

main "$@"
