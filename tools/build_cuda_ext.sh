#!/usr/bin/env bash
# Compile check of the CUDA extension mask_former._C (no GPU needed): builds it with FORCE_CUDA=1 into
# build/cuda_ext/ (the package itself is left untouched) and fails on any compile error. Skips, with a
# message, where there is no nvcc or torch has no CUDA support. Usage: bash tools/build_cuda_ext.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:-${PY:-.venv/bin/python}}
OUT=build/cuda_ext

if ! command -v nvcc >/dev/null 2>&1 && [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  echo "[build_cuda_ext] no nvcc found: skipping the CUDA compile check"
  exit 0
fi

if [ "$("$PY" -c 'import torch; print(torch.version.cuda is not None)')" != "True" ]; then
  echo "[build_cuda_ext] $PY has a CPU-only torch: skipping the CUDA compile check"
  exit 0
fi

start=$(date +%s)
echo "[build_cuda_ext] compiling mask_former._C for TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<setup.py default>}"
FORCE_CUDA=1 MASK_FORMER_NO_CPU_OP=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py --quiet build_ext \
  --build-temp "$OUT/tmp" --build-lib "$OUT/lib"
find "$OUT/lib" -name '_C.*.so' | grep -q . || { echo "[build_cuda_ext] no _C.*.so was produced" >&2; exit 1; }
echo "[build_cuda_ext] ok in $(( $(date +%s) - start ))s: $(find "$OUT/lib" -name '_C.*.so')"
