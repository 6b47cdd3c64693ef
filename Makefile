# boundaryscope — two commands do everything on a fresh machine:
#   make report   set up .venv, run `boundaryscope report` on the bundled MNIST model
#   make test     set up .venv with dev tools, run ruff, mypy and pytest
# GPU users: install the torch build for your CUDA into .venv first (see README), or
#   make report TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Without a GPU we pin the CPU wheel that is available locally, so the multi-GB CUDA
# packages are never pulled by a plain `pip install torch`.
TORCH_SPEC ?= torch==2.13.0
REPORT_DIR ?= runs/report
REPORT_ARGS ?=

.PHONY: setup setup-dev setup-bench report test test-slow lint bench bench-gpu clean screenshot

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is installed on its own first, and only if missing, so that installing the package
# (which needs torch>=2.2) never replaces it with another build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q onnx && $(PIP) install -q --no-deps onnx2torch
	touch $@

$(VENV)/.bench: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e ".[bench]"
	$(PIP) install -q --no-deps torchattacks adv-lib
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.dev
setup-bench: $(VENV)/.bench

report: setup
	$(VENV)/bin/boundaryscope report --out $(REPORT_DIR) $(REPORT_ARGS)

# The quick report's first screen in headless Chromium (Debian: apt-get install chromium);
# fails unless the verdict block is visible there.
screenshot: setup
	$(VENV)/bin/boundaryscope report --profile quick --out runs/quick
	$(PY) tools/screenshot.py runs/quick/report.html runs/quick/first_screen.png

lint: setup-dev
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	$(VENV)/bin/mypy src

test: setup-dev lint
	$(PY) -m pytest -m "not slow"

# Tests marked slow (kill-and-resume in subprocesses, torchrun): CI runs them after `make test`.
test-slow: setup-dev
	$(PY) -m pytest -m slow

bench: setup-bench
	$(PY) benchmarks/deepfool_vs_peers.py
	$(PY) benchmarks/reproduce_table_3_1.py
	$(PY) benchmarks/reproduce_balda.py
	$(PY) benchmarks/reproduce_table_5_1.py
	$(PY) benchmarks/theory_checks.py
	$(PY) benchmarks/universal_vs_art.py
	$(PY) benchmarks/reproduce_universal.py
	$(PY) benchmarks/universal_theorems.py
	$(PY) benchmarks/curvature.py
	$(PY) benchmarks/detection.py
	$(PY) benchmarks/regions.py
	$(PY) benchmarks/robust_training.py
	$(PY) benchmarks/defense_collapse.py
	$(PY) benchmarks/minimal_norm.py
	$(PY) benchmarks/evaluation.py
	$(PY) benchmarks/scaling.py --imagenet
	$(PY) benchmarks/report_cost.py
	$(PY) benchmarks/gpu.py --cifar-n 32 --imagenet-n 4 --batch 32

# The device benchmark alone, for a lent GPU (about 10 minutes at most).
bench-gpu: setup-bench
	$(PY) benchmarks/gpu.py --device cuda

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
