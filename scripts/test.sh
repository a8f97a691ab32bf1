#!/usr/bin/env bash
# Set up (first run) and run the test suite: core, CLI, MRML on slicer-core, Dask, regression baselines.
#   bash scripts/test.sh            the README's tier (-m "not slow and not redteam"), 2 pytest workers
#   bash scripts/test.sh --fast     everyday tier: also without tests that start processes (-m "... and not process")
#   bash scripts/test.sh ARGS...    extra pytest arguments (e.g. a test file, -k NAME, -n 0 for one process)
# The red-team faults (-m redteam) and the slow tier (-m slow: the bundled model's rebuild) run apart; .ci/run runs all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
args=()
if [[ "${1:-}" == "--fast" ]]; then
  shift
  args=(-m "not slow and not redteam and not process")
fi
# Two pytest workers (pytest-xdist): most tests run one core-bound process; override with -n N.
exec .venv/bin/python -m pytest -n "${PSMADOSE_TEST_WORKERS:-2}" "${args[@]}" "$@"
