#!/usr/bin/env bash
# One short check of the engine on one GPU (H100-class: under 8 minutes): tiny training with the
# engine's mixed precision, the fast preset on the prostate set, segment of a 160x192x224 scan,
# and a 2-process torchrun training when two GPUs are visible. Writes gpu_check.json and
# gpu_check.md under $OUT (or --out DIR).
#
#   bench/gpu_check.sh                       # CUDA; exits 2 with one message where there is none
#   bench/gpu_check.sh --device cpu --quick  # tiny sizes on CPU (CI)
#
# Python: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$here/../.venv/bin/python" ]]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/gpu_check.py" "$@"
