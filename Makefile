# llmforge: `make demo` (set-up + the whole pipeline on the embedded sample site), `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)

# Offline machines: use the GPT-2 BPE files beside the checkout when present.
ifeq ($(origin TIKTOKEN_CACHE_DIR), undefined)
ifneq ($(wildcard $(SHARED)/tiktoken_cache),)
export TIKTOKEN_CACHE_DIR := $(SHARED)/tiktoken_cache
endif
endif

.PHONY: install demo test lint format clean-storage server-stop

install: $(VENV)/.installed

# torch first, pinned to the CPU wheel: a bare `torch` requirement pulls multi-GB CUDA builds.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/llmforge demo

# One test worker per core (pytest-xdist; a module's tests stay on one worker, so its fixtures are
# built once). Each worker trains with one torch thread (tests/conftest.py): two workers' thread
# pools would otherwise fight over the same cores.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

server-stop:
	$(VENV)/bin/llmforge server stop
