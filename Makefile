# Two commands: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch is installed first so that no extra pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q "torch>=2.4"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.all: $(VENV)/.core
	@echo "Installing extras (rllib, local, dev, embeddings). llama-cpp-python compiles for ~5 min on first install."
	$(PIP) install -q -e ".[rllib,local,dev,embeddings]"
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/recoworld simulate --out runs/demo

test: $(VENV)/.all
	$(VENV)/bin/ruff check recoworld experiments tests
	$(PY) -m pytest -q -ra

lint: $(VENV)/.all
	$(VENV)/bin/ruff check recoworld experiments tests

bench: $(VENV)/.core
	$(PY) experiments/bench_env.py

clean:
	rm -rf $(VENV) runs .pytest_cache
