#!/usr/bin/env bash
# Set up (first run) and run the demo: a virtual patient -> dose prediction -> report, no network needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/psmadose demo --out "${1:-psmadose-demo}" --overwrite
