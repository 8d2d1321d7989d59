#!/usr/bin/env bash
# The test suite: builds .venv with the test dependencies (pytest, slicer-core) and runs pytest.
# Extra arguments go to pytest (e.g. -m "not slow", -k resume).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash scripts/setup_env.sh
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
exit "$status"
