#!/usr/bin/env bash
# Create or update .venv/ with everything mask_former needs; safe to run again (a stamp makes a
# repeated run with unchanged inputs a no-op). Only the package registries are used.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PY=$VENV/bin/python
STAMP=$VENV/.mask_former_setup
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"

inputs_hash() {
  cat requirements.txt requirements-constraints.txt setup.py tools/setup_env.sh tools/install_detectron2.py | sha256sum | cut -d' ' -f1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] && "$PY" -W ignore::FutureWarning -c "import mask_former" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi

[ -x "$PY" ] || { echo "[setup] creating $VENV"; "$PYTHON" -m venv "$VENV"; }
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] using the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "[setup] installing $TORCH_PINS"
  pip install --quiet $TORCH_PINS
fi
echo "[setup] installing requirements.txt"
pip install --quiet -r requirements.txt -c requirements-constraints.txt
"$PY" tools/install_detectron2.py
echo "[setup] installing mask_former (editable)"
pip install --quiet --no-deps --no-build-isolation -e .
inputs_hash > "$STAMP"
echo "[setup] done: $("$PY" -W ignore::FutureWarning -c 'import torch, detectron2, mask_former; print("torch", torch.__version__, "detectron2", detectron2.__version__)')"
