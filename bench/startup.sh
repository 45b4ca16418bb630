#!/usr/bin/env bash
# Size and start-up time of one or more zipapps, in one run: the first run on a fresh SHIV_ROOT
# (shiv extracts the whole file; median of FIRST_RUNS), then the median wall time of
# `krnet.pyz --help` and of `krnet.pyz node overlay --json` on a record of 50 runners, beside
# `python3 -c pass`. Each command gets one warm-up run, then RUNS timed runs. Uses hyperfine
# when installed, else a shell loop.
# Commands run with the interpreter itself (INTERPRETER, default: the system's /usr/bin/python3,
# as on the machines the zipapp is for), not through `#!/usr/bin/env python3`: a wrapper on PATH
# such as a pyenv shim would add its own start-up (about 70 ms here) to every figure.
#
#   bench/startup.sh [ZIPAPP...]     default dist/krnet.pyz; RUNS=15, FIRST_RUNS=3 by default
#
# To compare the universal file with a single-target one of the same commit:
#   KRNET_TARGETS=3.11-x86_64 ./build.sh && cp dist/krnet.pyz /tmp/single.pyz && ./build.sh
#   bench/startup.sh dist/krnet.pyz /tmp/single.pyz
set -euo pipefail
cd "$(dirname "$0")/.."

ZIPAPPS=()
for zipapp in "${@:-dist/krnet.pyz}"; do
    [ -f "$zipapp" ] || { echo "startup: $zipapp is missing: run ./build.sh first" >&2; exit 1; }
    ZIPAPPS+=("$(realpath "$zipapp")")
done
RUNS=${RUNS:-15}
FIRST_RUNS=${FIRST_RUNS:-3}
RUNNERS=50
PYTHON=${PYTHON:-.venv/bin/python}
system_python=/usr/bin/python3
[ -x $system_python ] || system_python=$(python3 -c 'import sys; print(sys.executable)')
INTERPRETER=${INTERPRETER:-$system_python}

work=$(mktemp -d /tmp/krt-startup.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A clean environment: no KRNET_* settings, no user config, extraction under $work.
for name in $(env | sed -n 's/^\(KRNET_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$name"; done
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config
export XDG_DATA_HOME=$work/home/.local/share
mkdir -p "$HOME"

# The record a host with 50 runners would have, written by the Store of this source tree.
"$PYTHON" - "$work/data" "$RUNNERS" <<'EOF'
import sys
from datetime import datetime, timezone
from pathlib import Path

from krnet.core.model.plan import OverlayPlan
from krnet.core.model.records import JoinRequest
from krnet.core.record.store import Store

data_dir, runners = Path(sys.argv[1]), int(sys.argv[2])
plan = OverlayPlan.build("10.0.0.1", 8, 16, 100)
with Store.open(data_dir) as store:
    for index in range(1, runners + 1):
        request = JoinRequest(None, f"runner-{index}", f"192.0.2.{index + 10}", 100, 4789, 1450)
        store.allocate(request, plan=plan, now=datetime.now(timezone.utc))
EOF
# Wall time of one command, in ms.
once_ms() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null
    end=$(date +%s%N)
    echo $(((end - start) / 1000000))
}

# The first run on a fresh SHIV_ROOT extracts the whole zipapp: the median of FIRST_RUNS of them.
first_run_ms() {
    local zipapp=$1 times=() i
    for i in $(seq "$FIRST_RUNS"); do
        times+=($(SHIV_ROOT=$work/first-$i-$RANDOM once_ms "$INTERPRETER" "$zipapp" --help))
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((FIRST_RUNS + 1) / 2))p"
}

median_ms_loop() {
    local command=$1 times=() start end
    $command >/dev/null
    for _ in $(seq "$RUNS"); do
        start=$(date +%s%N)
        $command >/dev/null
        end=$(date +%s%N)
        times+=($(((end - start) / 1000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{v[NR] = $1} END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'
}

median_ms_hyperfine() {
    hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$work/h.json" "$1" \
        >"$work/h.log" 2>&1 || { cat "$work/h.log" >&2; return 1; }
    python3 -c 'import json, sys
print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"] * 1000))' "$work/h.json"
}

tool=loop
command -v hyperfine >/dev/null && tool=hyperfine
echo "krnet start-up: $("$INTERPRETER" --version) ($INTERPRETER), $(nproc) CPUs, median of $RUNS" \
    "runs after 1 warm-up ($tool); first run: median of $FIRST_RUNS, each on a fresh SHIV_ROOT"
printf '  %-44s %8s ms\n' "python3 -c pass" "$("median_ms_$tool" "$INTERPRETER -c pass")"
for index in "${!ZIPAPPS[@]}"; do
    zipapp=${ZIPAPPS[$index]}
    export SHIV_ROOT=$work/shiv-$index
    echo "$zipapp: $(du -h "$zipapp" | cut -f1) ($(stat -c %s "$zipapp") bytes)"
    printf '  %-44s %8s ms\n' "first run (extraction), --help" "$(first_run_ms "$zipapp")"
    # This run extracts into SHIV_ROOT for the figures after it, and proves it reads the record.
    total=$("$INTERPRETER" "$zipapp" --data-dir "$work/data" node overlay --json |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])')
    [ "$total" = "$RUNNERS" ] || { echo "startup: node overlay saw $total runners" >&2; exit 1; }
    printf '  %-44s %8s ms\n' "--help" "$("median_ms_$tool" "$INTERPRETER $zipapp --help")"
    printf '  %-44s %8s ms\n' "node overlay --json ($RUNNERS runners)" \
        "$("median_ms_$tool" "$INTERPRETER $zipapp --data-dir $work/data node overlay --json")"
done
