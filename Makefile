# Two commands: `make demo` and `make test` (`make lint` first). Each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch is installed first so that no extra pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

# llama-cpp-python (extra `local`) is sdist-only and compiles on install. pip's default build is
# GGML_NATIVE (-march=native): on CPUs with AMX (Intel Xeon 4th gen+) its AMX kernels segfault on
# Gemma 3 270M, and the wheel only runs on CPUs like the one that built it. We build a portable
# AVX2 wheel instead. For speed on a CPU without AMX, opt into a native build:
#   make test LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON"
# The wheel lives in a cache keyed by version *and* flags: pip's own wheel cache is keyed by version
# only, so a native wheel there could silently replace the portable one. We never read it.
LLAMA_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS ?= $(HOME)/.cache/recoworld/wheels
LLAMA_KEY := $(shell printf '%s|%s' '$(LLAMA_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
LLAMA_DIR := $(LLAMA_WHEELS)/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_KEY)
# The tests read it to check that the installed build matches the flags (no AMX kernels unless asked).
export LLAMA_CMAKE_ARGS

.PHONY: demo test lint bench clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

# Built once per (version, flags) on a machine, into a temporary folder renamed when complete.
$(LLAMA_DIR)/.built: | $(VENV)/.core
	@echo "Compiling llama-cpp-python $(LLAMA_VERSION) with CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' (~5 min on 2 cores, once)."
	rm -rf $(LLAMA_DIR).tmp && mkdir -p $(LLAMA_DIR).tmp
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(PIP) wheel -q --no-cache-dir --no-deps \
		--no-binary llama-cpp-python -w $(LLAMA_DIR).tmp "llama-cpp-python==$(LLAMA_VERSION)"
	printf '%s\n' '$(LLAMA_CMAKE_ARGS)' > $(LLAMA_DIR).tmp/CMAKE_ARGS
	touch $(LLAMA_DIR).tmp/.built
	rm -rf $(LLAMA_DIR) && mv $(LLAMA_DIR).tmp $(LLAMA_DIR)

$(VENV)/.llama-$(LLAMA_KEY): $(LLAMA_DIR)/.built
	$(PIP) install -q --no-cache-dir --no-deps --force-reinstall $(LLAMA_DIR)/llama_cpp_python-*.whl
	rm -f $(VENV)/.llama-* && touch $@

# Every extra: the tests cover them all. The CPU torch wheel goes in first (see TORCH_SPEC).
$(VENV)/.all: $(VENV)/.core $(VENV)/.llama-$(LLAMA_KEY)
	@echo "Installing extras (torch, rllib, local, dev, embeddings, experiments)."
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q "torch>=2.4"
	$(PIP) install -q -e ".[torch,rllib,local,dev,embeddings,experiments]"
	touch $@

$(VENV)/.experiments: $(VENV)/.core
	$(PIP) install -q -e ".[experiments]"
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/recoworld simulate --out runs/demo --overwrite  # the demo replaces its own previous run
	$(VENV)/bin/recoworld report runs/demo

test: lint
	$(PY) -m pytest -q -ra

# ruff, then mypy over all of recoworld/ (its configuration: pyproject.toml).
lint: $(VENV)/.all
	$(VENV)/bin/ruff check recoworld experiments tests
	$(VENV)/bin/mypy

bench: $(VENV)/.experiments
	$(PY) experiments/bench_env.py

clean:
	rm -rf $(VENV) runs .pytest_cache
