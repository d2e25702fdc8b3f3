# piigate: every target does its own set-up (virtual environment, dependencies, stubs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf

.PHONY: demo test lint typecheck buf-lint gen gen-check pytest bench bench-vault clean

demo: $(STAMP) gen
	$(PY) -m piigate_dev.demo

test: lint typecheck buf-lint gen-check pytest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

gen: $(STAMP)
	$(PY) protos/generate.py

gen-check: $(STAMP)
	$(PY) protos/generate.py --check

lint: $(STAMP)
	$(VENV)/bin/ruff check server clients dev tests bench protos

typecheck: $(STAMP)
	$(VENV)/bin/mypy

buf-lint: $(BUF)
	$(BUF) lint

pytest: $(STAMP) gen
	$(VENV)/bin/pytest -q

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) gen
	$(PY) -m bench $(BENCH_ARGS)

bench-vault: $(STAMP) gen
	$(PY) -m bench.vault_load --pin

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
