#!/usr/bin/env bash
# One-shot demo on the embedded sample: builds .venv, trains on CPU, segments, evaluates, reports.
# Extra arguments go to 'rrlmedsam demo' (e.g. --out DIR, --preset tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/rrlmedsam demo --device cpu "$@"
