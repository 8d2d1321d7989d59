#!/usr/bin/env bash
# The test suite: builds .venv with the test dependencies (pytest, ruff, slicer-core), runs
# ruff check (lint and import order, configured in pyproject.toml), then pytest.
# Extra arguments go to pytest (e.g. -m "not slow", -k resume).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash scripts/setup_env.sh
.venv/bin/python -m ruff check .
status=0
.venv/bin/python -m pytest -q --durations=25 "$@" || status=$?
exit "$status"
