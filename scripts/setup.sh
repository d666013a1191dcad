#!/usr/bin/env bash
# Sets up .venv with xdistil_ray and its test tools. Safe to run again.
#
# torch is pinned by constraints.txt: where pip finds a local CPU wheel of that version
# (find-links, as on our CPU build machines) it takes it; elsewhere it takes PyPI's CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,onnx,mlflow,wandb]"
.venv/bin/python -c "import torch, ray, deepspeed, transformers; print('xdistil_ray ready: torch', torch.__version__, '| ray', ray.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__)"
