#!/usr/bin/env bash
# Prove the zipapp is the whole product, on every interpreter it serves: a matrix of clean
# machines that have nothing but python3 (no pip packages), each cell in a network namespace of
# its own with only loopback up.
#
#   bookworm, trixie, sid   minimal Debian roots (debootstrap, cached): CPython 3.11, 3.13, 3.14,
#                           in a throwaway overlay of the root, with chroot
#   pyenv-3.10, pyenv-3.12  this machine's pyenv interpreters, in a fresh venv without pip (their
#                           own installs hold some of krnet's dependencies and would hide one)
#   arm64                   a Debian stable root for aarch64 (debootstrap --foreign, its packages
#                           unpacked), run through qemu-aarch64-static -L (no binfmt handler)
#
# In every cell: --version, config show, db upgrade on a fresh data dir, node overlay --json, and
# a protocol round trip on 127.0.0.1: `serve` in host mode with the overlay off, a runner `serve`
# joining it, and `node overlay --json --connect` seeing the runner active in the host's record.
#
#   sudo scripts/check-clean-machine.sh [ZIPAPP]          default dist/krnet.pyz
#
# KRNET_ROOTS           where the roots are cached (default .cache/roots in this repository)
# KRNET_DEBIAN_MIRROR   the mirror for debootstrap (default: the one apt uses here)
# KRNET_CELLS           the cells to run (default: all of the above)
# Prints one line per cell and a final `N passed, M failed`; exits 0 only when every cell passes.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOTS=${KRNET_ROOTS:-$HERE/../.cache/roots}
CELLS=${KRNET_CELLS:-pyenv-3.10 pyenv-3.12 bookworm trixie sid arm64}
PYENV_VERSIONS=${PYENV_VERSIONS:-/root/.pyenv/versions}
# Every dependency the zipapp carries; none may be importable from the cell's own python3.
DEPENDENCIES="pydantic pydantic_core textual sqlmodel sqlalchemy alembic pyroute2 docker platformdirs"
# What `--version` must say it carries.
CARRIES="carries CPython 3.10 3.11 3.12 3.13 3.14 on x86_64, aarch64 (glibc 2.17 or newer)"

die() {
    echo "check-clean-machine: $*" >&2
    exit 1
}

# The first mirror apt's sources name for bookworm (deb822 .sources or one-line .list files).
apt_mirror() {
    python3 - bookworm /etc/apt/sources.list /etc/apt/sources.list.d/* <<'EOF'
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

# A minimal root with python3, made once: later runs reuse it (only when complete). For another
# architecture debootstrap only downloads and unpacks the essential packages (--foreign); the
# rest, python3 among them, are unpacked here (no package configuration runs: nothing in the root
# is executed but python3, which writes its standard library's .pyc files there on first use).
ensure_root() {
    local name=$1 suite=$2 arch=$3 root=$ROOTS/$1
    [ -f "$root/.krnet-complete" ] && return 0
    local mirror=${KRNET_DEBIAN_MIRROR:-$(apt_mirror)}
    rm -rf "$root.partial"
    mkdir -p "$ROOTS"
    if [ "$arch" = amd64 ]; then
        debootstrap --variant=minbase --include=python3 "$suite" "$root.partial" "$mirror" \
            >"$root.log" 2>&1 || die "debootstrap $suite failed; see $root.log"
    else
        debootstrap --arch "$arch" --foreign --variant=minbase --include=python3 "$suite" \
            "$root.partial" "$mirror" >"$root.log" 2>&1 || die "debootstrap $suite failed; see $root.log"
        local deb
        for deb in "$root.partial"/var/cache/apt/archives/*.deb; do
            dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$root.partial" --keep-directory-symlink
        done
    fi
    rm -rf "$root"
    mv "$root.partial" "$root"
    touch "$root/.krnet-complete"
}

# --- inside one cell (network and mount namespace of its own) --------------------------------

# Become the cell's python3, with a fresh login's environment plus NAME=VALUE words given first
# (run in the background, its $! is then the interpreter itself, which a signal reaches).
exec_py() {
    local environ=(HOME="$home" LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
        DOCKER_HOST=unix:///nonexistent/docker.sock)
    while [[ "${1:-}" == *=* ]]; do
        environ+=("$1")
        shift
    done
    exec "${runner[@]}" /usr/bin/env -i "${environ[@]}" "${python[@]}" "$@"
}

py() { (exec_py "$@"); }

step_failed() {
    echo "$1" >"$cell_dir/failure"
    return 1
}

check_no_dependencies() {
    local importable
    importable=$(py -c "import importlib.util as u, sys
print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))" $DEPENDENCIES 2>&1) || true
    [ -z "$importable" ] || step_failed "the cell's python3 imports: $importable"
}

check_version() {
    local output
    output=$(py "$zipapp" --version 2>&1) || true
    echo "$output" >"$cell_dir/version"
    [[ "$output" == "krnet $version on CPython 3."*", Linux $arch, glibc "*"; $CARRIES" ]] ||
        step_failed "--version: $output"
}

# Under qemu most of the aarch64 cell's time went to compiling the extracted site-packages to
# bytecode (12 to 29 minutes). Bytecode does not depend on the CPU: the same CPython minor
# version on x86_64 (pyenv) compiles it, into the cache the cell's own python3 then reads.
# Every step still runs on the cell's aarch64 interpreter. No-op for the other cells.
prewarm_bytecode() {
    [ "$arch" = aarch64 ] || return 0
    local minor native site
    minor=$(py -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || return 0
    native=$(ls -d "$PYENV_VERSIONS/$minor".*/bin/python 2>/dev/null | sort -V | tail -n 1)
    [ -n "$native" ] || return 0
    for site in "$home"/.shiv/*/site-packages; do
        [ -d "$site" ] && "$native" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
    done
    return 0
}

check_config_show() {
    local output
    output=$(py "$zipapp" config show 2>&1) || true
    grep -Eq '^overlay_host_ip +10\.0\.0\.1 +default$' <<<"$output" ||
        step_failed "config show: $(tail -n 1 <<<"$output")"
}

check_db_upgrade() {
    local output
    output=$(py "$zipapp" --data-dir "$data/db" db upgrade 2>&1) || true
    grep -q "empty -> " <<<"$output" || step_failed "db upgrade: $(tail -n 1 <<<"$output")"
}

check_node_overlay() {
    local output
    output=$(py "$zipapp" --data-dir "$data/empty" node overlay --json 2>&1) || true
    python3 -c 'import json, sys
status = json.loads(sys.argv[1])
assert status["host_overlay_ip"] == "10.0.0.1/8" and status["runners"] == []
assert status["available_ids"] == 255' "$output" 2>/dev/null ||
        step_failed "node overlay --json: $(tail -n 1 <<<"$output")"
}

# Wait until FILE has a line matching PATTERN (the process PID must live meanwhile).
wait_for_log() {
    local file=$1 pattern=$2 pid=$3 deadline=$((SECONDS + wait_limit))
    while ! grep -q "$pattern" "$file" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# host `serve` (overlay off, 127.0.0.1), a runner `serve` joining it, `node overlay --connect`.
check_round_trip() {
    local h=$data/host r=$data/runner token output host_pid runner_pid status=0
    py "$zipapp" --config "$h.toml" --data-dir "$h" init host \
        --host-reachable-address 127.0.0.1 >"$cell_dir/init.log" 2>&1 ||
        step_failed "init host: $(tail -n 1 "$cell_dir/init.log")" || return 1
    token=$(py "$zipapp" --config "$h.toml" --data-dir "$h" token 2>"$cell_dir/token.log") ||
        step_failed "token: $(tail -n 1 "$cell_dir/token.log")" || return 1
    py "$zipapp" --config "$r.toml" --data-dir "$r" init runner --host-address 127.0.0.1 \
        --join-token "$token" >>"$cell_dir/init.log" 2>&1 ||
        step_failed "init runner: $(tail -n 1 "$cell_dir/init.log")" || return 1
    # A runner busy applying its allocation (minutes under qemu) sends no heartbeat meanwhile.
    exec_py KRNET_OVERLAY_ENABLED=false KRNET_JOIN_BIND=127.0.0.1 KRNET_RUNNER_TIMEOUT=900 \
        "$zipapp" --config "$h.toml" --data-dir "$h" serve >"$cell_dir/host.log" 2>&1 &
    host_pid=$!
    if ! wait_for_log "$cell_dir/host.log" "listening for runners on 127.0.0.1" $host_pid; then
        kill $host_pid 2>/dev/null
        step_failed "serve (host): $(tail -n 1 "$cell_dir/host.log")"
        return 1
    fi
    exec_py KRNET_HEARTBEAT_INTERVAL=1 "$zipapp" --config "$r.toml" --data-dir "$r" serve \
        >"$cell_dir/runner.log" 2>&1 &
    runner_pid=$!
    if wait_for_log "$cell_dir/runner.log" "joined as runner 1" $runner_pid; then
        output=$(py "$zipapp" --config "$r.toml" --data-dir "$r" node overlay --json \
            --connect 127.0.0.1 2>&1) || true
        python3 -c 'import json, sys
status = json.loads(sys.argv[1])
assert [(r["runner_id"], r["status"]) for r in status["runners"]] == [(1, "active")]' \
            "$output" 2>/dev/null || status=$?
        [ $status -eq 0 ] || step_failed "node overlay --connect: $(tail -n 1 <<<"$output")"
    else
        status=1
        step_failed "serve (runner) never joined: $(tail -n 1 "$cell_dir/runner.log")"
    fi
    kill -TERM $runner_pid $host_pid 2>/dev/null || true
    wait $runner_pid || step_failed "serve (runner) exited $?: $(tail -n 1 "$cell_dir/runner.log")"
    wait $host_pid || step_failed "serve (host) exited $?: $(tail -n 1 "$cell_dir/host.log")"
    [ $status -eq 0 ] && [ ! -s "$cell_dir/failure" ]
}

# How the cell starts its python3 (runner/python arrays), where it sees the zipapp and its data.
prepare_cell() {
    local name=$1 root
    runner=() python=(python3)
    home=$scratch/home data=$scratch/data zipapp=$zipapp_path arch=x86_64 wait_limit=60
    case $name in
    pyenv-*)
        local interpreter
        interpreter=$(ls -d "$PYENV_VERSIONS/${name#pyenv-}".*/bin/python 2>/dev/null | sort -V | tail -n 1)
        [ -n "$interpreter" ] || step_failed "no CPython ${name#pyenv-} in $PYENV_VERSIONS" || return 1
        "$interpreter" -m venv --without-pip "$scratch/venv"
        python=("$scratch/venv/bin/python")
        ;;
    arm64)
        root=$ROOTS/arm64
        python=(qemu-aarch64-static -L "$root" "$root/usr/bin/python3")
        arch=aarch64 wait_limit=600
        ;;
    *)
        root=$ROOTS/$name merged=$scratch/merged
        mkdir -p "$scratch/upper" "$scratch/work" "$merged"
        mount -t overlay overlay -o "lowerdir=$root,upperdir=$scratch/upper,workdir=$scratch/work" \
            "$merged"
        mount -t proc proc "$merged/proc"
        cp "$zipapp_path" "$merged/krnet.pyz"
        runner=(chroot "$merged") home=/root data=/tmp/krnet zipapp=/krnet.pyz
        ;;
    esac
    if [ -n "${merged:-}" ]; then
        mkdir -p "$merged$data"
    else
        mkdir -p "$home" "$data"
    fi
}

run_cell() {
    local name=$1 check
    ip link set lo up
    scratch=$(mktemp -d /tmp/krt-clean.XXXXXX)
    trap 'umount "$scratch/merged/proc" "$scratch/merged" 2>/dev/null || true; rm -rf "$scratch"' EXIT
    prepare_cell "$name" || return 1
    for check in check_no_dependencies check_version prewarm_bytecode check_config_show \
        check_db_upgrade check_node_overlay check_round_trip; do
        "$check" || return 1
    done
}

# --- outside the cells ----------------------------------------------------------------------

root_of() {
    case $1 in
    bookworm | trixie | sid) echo "$1 $1 amd64" ;;
    arm64) echo "arm64 stable arm64" ;;
    esac
}

# One cell in its own network and mount namespace; its line goes to RESULTS/NAME.
cell() {
    local name=$1 started=$SECONDS status=0 line
    cell_dir=$results/$name
    mkdir -p "$cell_dir"
    export cell_dir
    unshare --net --mount --propagation private -- "$0" --cell "$name" "$zipapp_path" \
        "$version" >"$cell_dir/out" 2>&1 || status=$?
    line="$(cut -d';' -f1 "$cell_dir/version" 2>/dev/null | sed 's/^krnet [^ ]* on //')"
    if [ $status -eq 0 ]; then
        printf 'PASS  %-10s %s: version, config, db, overlay, join (%d s)\n' "$name" "$line" \
            $((SECONDS - started)) >"$cell_dir/line"
    else
        printf 'FAIL  %-10s %s (%d s)\n' "$name" \
            "$(cat "$cell_dir/failure" 2>/dev/null || tail -n 1 "$cell_dir/out")" \
            $((SECONDS - started)) >"$cell_dir/line"
    fi
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
    if [ "${1:-}" = --cell ]; then # internal: re-entered inside the cell's namespaces
        zipapp_path=$3 version=$4
        run_cell "$2"
        return
    fi
    local started=$SECONDS name passed=0 failed=0 builders=() arm64_cell=
    zipapp_path=$(realpath "${1:-$HERE/../dist/krnet.pyz}")
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, unshare, mount, chroot)"
    for tool in debootstrap qemu-aarch64-static unshare ip; do
        command -v $tool >/dev/null || die "$tool is missing: ./build.sh installs it (as root)"
    done
    [ -f "$zipapp_path" ] || die "$zipapp_path is missing: run ./build.sh first"
    version=$(zipapp_version "$zipapp_path")
    results=$(mktemp -d /tmp/krt-matrix.XXXXXX)
    trap 'rm -rf "$results"' EXIT
    mkdir -p "$ROOTS"
    ROOTS=$(realpath "$ROOTS")
    export ROOTS
    # The roots download in parallel while the pyenv cells run; the arm64 cell, slow under
    # qemu, runs beside the others as soon as its root is there.
    for name in $CELLS; do
        [ -n "$(root_of "$name")" ] || continue
        [ -f "$ROOTS/$name/.krnet-complete" ] || echo "making the $name root (cached in $ROOTS)" >&2
        if [ "$name" = arm64 ]; then
            (ensure_root $(root_of arm64) && cell arm64) &
            arm64_cell=$!
        else
            ensure_root $(root_of "$name") &
            builders+=($!)
        fi
    done
    for name in $CELLS; do
        case $name in pyenv-*) cell "$name" ;; esac
    done
    for pid in "${builders[@]}"; do wait "$pid" || true; done
    for name in $CELLS; do
        case $name in pyenv-* | arm64) ;; *) [ -f "$ROOTS/$name/.krnet-complete" ] && cell "$name" ;; esac
    done
    [ -z "$arm64_cell" ] || wait "$arm64_cell" || true
    for name in $CELLS; do
        if [ -f "$results/$name/line" ]; then
            cat "$results/$name/line"
        else
            echo "FAIL  $name: its root could not be made (see $ROOTS/$name.log)"
        fi
        if grep -q '^PASS' "$results/$name/line" 2>/dev/null; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
    echo "clean machines ($((SECONDS - started)) s): $passed passed, $failed failed"
    [ $failed -eq 0 ]
}

main "$@"
