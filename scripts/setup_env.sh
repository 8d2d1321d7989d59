#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the engine into it.
#
#   PYTHON            interpreter to build the environment from (default: python3.11, else python3)
#   TORCH_REQUIREMENT torch to install first (default: torch==2.13.0, a CPU build where a local
#                     wheel exists); installing torch before the engine keeps pip from pulling a
#                     different build through the engine's "torch>=2.1" requirement.
#   EXTRAS            optional dependency groups of the engine, e.g. "test" (default: none)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_REQUIREMENT=${TORCH_REQUIREMENT:-torch==2.13.0}
EXTRAS=${EXTRAS:-}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_REQUIREMENT"
if [ -n "$EXTRAS" ]; then
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
