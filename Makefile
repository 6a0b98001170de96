PY := .venv/bin/python

.PHONY: setup test quickstart quickstart-video

# Create .venv with torch, detectron2 and mask_former (idempotent).
setup:
	bash tools/setup_env.sh

# Set up if needed, (re)build the fused CPU operator in place (skipped with a message without a compiler),
# compile-check the CUDA kernel (where nvcc exists), lint, run the whole test suite on the CPU.
test: setup
	$(PY) -m ruff check .
	MAX_JOBS=2 $(PY) setup.py --quiet build_ext --inplace
	bash tools/build_cuda_ext.sh $(PY)
	$(PY) -m pytest -q tests

# The whole pipeline on the built-in demo dataset.
quickstart: setup
	$(PY) tools/quickstart.py

# The same for video instance segmentation (Mask2Former-VIS) on the built-in demo video dataset.
quickstart-video: setup
	$(PY) tools/quickstart.py --video
