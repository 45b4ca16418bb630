#!/bin/sh
# Scale: 255 simulated runners join a `krnet serve` host in a lab namespace at once (real
# tunnels, routes, iptables and port guard); host memory and CPU, a restart's time and kernel
# writes, `node overlay --json`; each figure beside a 10-runner run in the same process and
# the kernel floor (ip -batch, iptables-restore). Needs root; bounded (--budget); tears down.
#
#   sudo bench/scale.sh [--runners 10 255] [--repeat 7] [--hold 30] [--budget 600] [--profile]
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" bench/scale.py "$@"
