#!/usr/bin/env bash
# Prove the zipapp is the whole product: it runs on a clean Debian bookworm machine that has
# nothing but python3 (no pip packages). Builds a minimal bookworm root with debootstrap once
# (cached), then, in a throwaway overlay of it inside a private mount namespace, copies in only
# the zipapp and runs `--version`, `config show` and `node overlay --json` there with chroot.
#
#   sudo scripts/check-clean-machine.sh [ZIPAPP]          default dist/krnet.pyz
#
# KRNET_BOOKWORM_ROOT   where the bookworm root is cached (default /var/cache/krnet-bookworm-root)
# KRNET_DEBIAN_MIRROR   the mirror for debootstrap (default: the one apt uses for bookworm here)
# Prints PASS or FAIL per step; exits 0 only when every step passes.
set -euo pipefail

ROOT_CACHE=${KRNET_BOOKWORM_ROOT:-/var/cache/krnet-bookworm-root}
SUITE=bookworm
# Every dependency the zipapp carries; none may be importable from the root's own python3.
DEPENDENCIES="pydantic pydantic_core textual sqlmodel sqlalchemy alembic pyroute2 docker platformdirs"

failures=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*"
    failures=$((failures + 1))
}
die() {
    echo "check-clean-machine: $*" >&2
    exit 1
}

# The first mirror apt's sources name for $SUITE (deb822 .sources or one-line .list files).
apt_mirror() {
    python3 - "$SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/* <<'EOF'
import sys
from pathlib import Path

suite, files = sys.argv[1], [Path(name) for name in sys.argv[2:]]
for path in files:
    if not path.is_file():
        continue
    text = path.read_text(errors="replace")
    if path.suffix == ".sources":
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                key, _, value = line.partition(":")
                if value and not line.startswith((" ", "\t", "#")):
                    fields[key.strip().lower()] = value.split()
            if suite in fields.get("suites", []) and "deb" in fields.get("types", ["deb"]):
                print(fields["uris"][0])
                raise SystemExit(0)
    else:
        for line in text.splitlines():
            words = [word for word in line.split("#")[0].split() if not word.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                print(words[1])
                raise SystemExit(0)
raise SystemExit(f"no apt source for {suite} in /etc/apt/sources.list*")
EOF
}

# A minimal bookworm root with python3, made once: later runs reuse it (only when complete).
ensure_root() {
    if [ -f "$ROOT_CACHE/.krnet-complete" ]; then
        echo "using the cached $SUITE root at $ROOT_CACHE"
        return
    fi
    local mirror
    mirror=${KRNET_DEBIAN_MIRROR:-$(apt_mirror)}
    echo "making a minimal $SUITE root with debootstrap from $mirror (cached at $ROOT_CACHE)"
    rm -rf "$ROOT_CACHE.partial"
    mkdir -p "$(dirname "$ROOT_CACHE")"
    debootstrap --variant=minbase --include=python3 "$SUITE" "$ROOT_CACHE.partial" "$mirror" \
        >"$ROOT_CACHE.log" 2>&1 || die "debootstrap failed; see $ROOT_CACHE.log"
    rm -rf "$ROOT_CACHE"
    mv "$ROOT_CACHE.partial" "$ROOT_CACHE"
    touch "$ROOT_CACHE/.krnet-complete"
}

# Run a command in the root as a fresh login would: no environment from this machine.
in_root() {
    chroot "$merged" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        "$@"
}

# The checks, in a private mount namespace: the overlay and /proc vanish with it.
run_checks() {
    local zipapp=$1 version=$2
    scratch=$(mktemp -d /tmp/krt-clean.XXXXXX)
    merged=$scratch/merged
    trap 'umount "$merged/proc" "$merged" 2>/dev/null; rm -rf "$scratch"' EXIT
    mkdir -p "$scratch/upper" "$scratch/work" "$merged"
    mount -t overlay overlay \
        -o "lowerdir=$ROOT_CACHE,upperdir=$scratch/upper,workdir=$scratch/work" "$merged"
    mount -t proc proc "$merged/proc"
    cp "$zipapp" "$merged/krnet.pyz"

    local output
    output=$(in_root python3 --version 2>&1) || true
    echo "      root: Debian $(cat "$merged/etc/debian_version"), $output"
    local importable
    importable=$(in_root python3 -c "import importlib.util as u, sys
print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))" $DEPENDENCIES 2>&1) || true
    if [ -z "$importable" ] && ! in_root python3 -c "import pydantic" 2>/dev/null; then
        pass "no pip packages in the root (import pydantic fails outside the zipapp)"
    else
        fail "the root's python3 imports: ${importable:-pydantic}"
    fi

    output=$(in_root python3 /krnet.pyz --version 2>&1) || true
    if [ "$output" = "krnet $version" ]; then
        pass "python3 /krnet.pyz --version: $output"
    else
        fail "python3 /krnet.pyz --version: expected 'krnet $version', got: $output"
    fi

    output=$(in_root python3 /krnet.pyz config show 2>&1) || true
    if grep -Eq '^overlay_host_ip +10\.0\.0\.1 +default$' <<<"$output" &&
        grep -Eq '^overlay_vxlan_port +4789 +default$' <<<"$output"; then
        pass "python3 /krnet.pyz config show: $(grep -c ' default$' <<<"$output") defaults shown"
    else
        fail "python3 /krnet.pyz config show: $output"
    fi

    output=$(in_root python3 /krnet.pyz --data-dir /tmp/d node overlay --json 2>&1) || true
    if in_root python3 -c 'import json, sys
status = json.loads(sys.argv[1])
assert status["host_overlay_ip"] == "10.0.0.1/8" and status["runners"] == []
assert status["available_ids"] == 255' "$output" 2>/dev/null; then
        pass "python3 /krnet.pyz --data-dir /tmp/d node overlay --json: empty record, 255 ids free"
    else
        fail "python3 /krnet.pyz --data-dir /tmp/d node overlay --json: $output"
    fi

    [ "$failures" -eq 0 ]
}

# The version the zipapp carries, read from its own metadata.
zipapp_version() {
    python3 - "$1" <<'EOF'
import re, sys, zipfile

with zipfile.ZipFile(sys.argv[1]) as archive:
    name = next(n for n in archive.namelist() if re.fullmatch(r"site-packages/krnet-[^/]+\.dist-info/METADATA", n))
    print(re.search(r"^Version: (\S+)$", archive.read(name).decode(), re.M).group(1))
EOF
}

main() {
    if [ "${1:-}" = --checks ]; then # internal: re-entered inside the private mount namespace
        shift
        run_checks "$@"
        return
    fi
    local started=$SECONDS zipapp
    zipapp=$(realpath "${1:-$(dirname "$0")/../dist/krnet.pyz}")
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, mount, chroot)"
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    [ -f "$zipapp" ] || die "$zipapp is missing: run ./build.sh first"
    ensure_root
    local status=0
    unshare --mount --propagation private -- "$0" --checks "$zipapp" "$(zipapp_version "$zipapp")" ||
        status=$?
    if [ "$status" -eq 0 ]; then
        echo "PASS  $zipapp runs on a clean $SUITE root ($((SECONDS - started)) s)"
    else
        echo "FAIL  $zipapp on a clean $SUITE root ($((SECONDS - started)) s)"
    fi
    return "$status"
}

main "$@"
