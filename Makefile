# samtune: `make demo` and `make test` set everything up on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.samtune-installed
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Roboflow's client for the serving tests, without its own pins (they would downgrade numpy and
# pillow and add a second OpenCV next to opencv-python-headless): the package and the small
# packages it imports.
CLIENT_PINS ?= inference-sdk==1.8.3 dataclasses-json==0.6.7 marshmallow==3.26.2 \
	typing-inspect==0.9.0 mypy-extensions==1.2.0 backoff==2.2.1 tldextract==5.1.3 \
	requests-file==3.0.1 supervision==0.30.9 pyDeprecate==0.13.0 defusedxml==0.7.1
DEMO_ARGS ?=

.PHONY: setup test test-slow test-all demo lint format benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation "sam2==1.1.0"
	$(PY) -m pip install -q -e ".[dev,sam3]"
	$(PY) -c "import inference_sdk" 2>/dev/null || $(PY) -m pip install -q --no-deps $(CLIENT_PINS)
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m "slow and not gpu"

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
	$(PY) -m scripts.bench

clean:
	rm -rf outputs multirun wandb .pytest_cache
