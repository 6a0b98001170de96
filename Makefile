PY := .venv/bin/python

.PHONY: setup test quickstart

# Create .venv with torch, detectron2 and mask_former (idempotent).
setup:
	bash tools/setup_env.sh

# Set up if needed, compile-check the CUDA kernel (where nvcc exists), run the whole test suite on the CPU.
test: setup
	bash tools/build_cuda_ext.sh $(PY)
	$(PY) -m pytest -q tests

# The whole pipeline on the built-in demo dataset.
quickstart: setup
	$(PY) tools/quickstart.py
