#!/bin/sh
# Data-plane throughput and latency (iperf3, ping): krnet's overlay between containers on two
# runners through the hub and direct (overlay_mode = "direct"), beside the same runners over the
# underlay and a hand-built hub of the same shape.
# Needs root, iperf3, Docker; bounded in time (--budget); tears everything down.
#
#   sudo bench/dataplane.sh [--runs 3] [--seconds 5] [--budget 900]
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" bench/dataplane.py "$@"
