# samtune: `make demo` and `make test` set everything up on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.samtune-installed
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_ARGS ?=

.PHONY: setup test test-all demo lint format benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation "sam2==1.1.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

lint: setup
	$(PY) -m ruff check samtune tests scripts
	$(PY) -m ruff format --check samtune tests scripts

format: setup
	$(PY) -m ruff format samtune tests scripts
	$(PY) -m ruff check --fix samtune tests scripts

benchmark: setup
	$(PY) scripts/benchmark.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
