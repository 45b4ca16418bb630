#!/bin/sh
# Remove network namespaces (and the processes inside them) left by krnet labs: names krt*.
# Usage: scripts/sweep-lab.sh [PREFIX]   (default krt; run as root)
# Careful: with the default prefix this also removes labs that are running right now.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" -c 'import sys
from krnet.lab.namespaces import sweep
for name in sweep(sys.argv[1]):
    print("removed", name)' "${1:-krt}"
