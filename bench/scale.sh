#!/bin/sh
# Scale: 255 simulated runners join a `krnet serve` host in a lab namespace at once (real
# tunnels, routes, iptables and port guard); host memory and CPU, a restart's time and kernel
# writes, `node overlay --json`; each figure beside a 10-runner baseline run in the same
# process. Needs root; bounded in time (--budget); tears everything down.
#
#   sudo bench/scale.sh [--runners 255] [--baseline 10] [--repeat 7] [--hold 30] [--budget 600]
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" bench/scale.py "$@"
