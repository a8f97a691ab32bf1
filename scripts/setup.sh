#!/usr/bin/env bash
# Create .venv (if missing) and install psmadose with pinned dependencies. Idempotent; needs only PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
extra="${1:-}"
if [ "$extra" = "test" ]; then
  .venv/bin/python -m pip install --quiet -c requirements-lock.txt -e ".[test]"
  # ComBat for tools/external_validation.py (tested). --no-deps: its declared umap-learn/plotly/seaborn serve only
  # its plotting helpers; the ComBat core imports numpy, pandas, scipy and scikit-learn, all installed above.
  .venv/bin/python -m pip install --quiet --no-deps -c requirements-lock.txt "combatlearn==2.3.0"
else
  .venv/bin/python -m pip install --quiet -c requirements-lock.txt -e .
fi
