# `make serve` and `make test` each set everything up on a fresh machine first: serving installs
# the server's extras (.[diffusers,s3]); checks and tests add the test tools (.[dev]). The client
# alone is a plain `pip install .` (README).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0

.PHONY: install install-dev serve worker migrate check test test-fast clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Keep a torch that is already there (e.g. a CUDA build); else take the pinned release.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[diffusers,s3]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

serve: install
	$(VENV)/bin/easel serve

worker: install
	$(VENV)/bin/easel worker

migrate: install
	$(VENV)/bin/easel migrate

check: install-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: check
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest

test-fast: install-dev
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -m "not slow"

clean:
	rm -rf $(VENV) easel-data .pytest_cache .mypy_cache .ruff_cache
