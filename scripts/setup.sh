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
else
  .venv/bin/python -m pip install --quiet -c requirements-lock.txt -e .
fi
