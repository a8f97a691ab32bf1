#!/usr/bin/env bash
# Set up (first run) and run the whole test suite: core, CLI, MRML on slicer-core, regression baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
