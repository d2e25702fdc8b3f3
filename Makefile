# piigate: every target does its own set-up (virtual environment, dependencies, stubs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
# The stub generator has its own environment: it is pinned older than the gateway's
# protobuf admits (see clients/pyproject.toml, extra `gen`).
GEN_VENV  := .tools/gen
GEN_PY    := $(GEN_VENV)/bin/python
GEN_STAMP := $(GEN_VENV)/.installed-stamp

.PHONY: demo test lint typecheck buf-lint gen gen-check pytest bench bench-vault clean

demo: $(STAMP) gen
	$(PY) -m piigate_dev.demo

# examples/smart_on_fhir: a SMART-on-FHIR facade over piigate, offline, in one process.
.PHONY: example-smart
example-smart: $(STAMP) gen
	$(PY) -m examples.smart_on_fhir

test: lint typecheck buf-lint buf-breaking gen-check pytest

# The three distributions in one resolution, so `piigate-client` comes from ./clients.
$(STAMP): pyproject.toml clients/pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e './clients[support]' -e '.[dev]' -e ./dev
	touch $(STAMP)

$(GEN_STAMP): clients/pyproject.toml
	$(PYTHON) -m venv $(GEN_VENV)
	$(GEN_PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(GEN_PY) -m pip install --quiet --disable-pip-version-check -e './clients[gen]'
	touch $(GEN_STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

gen: $(GEN_STAMP)
	$(GEN_PY) protos/generate.py

gen-check: $(GEN_STAMP)
	$(GEN_PY) protos/generate.py --check

lint: $(STAMP)
	$(VENV)/bin/ruff check server clients dev tests bench protos examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

buf-lint: $(BUF)
	$(BUF) lint

# The API against the previous commit (buf.yaml's `breaking` rules). A clone that lacks it
# (shallow, single-commit, or no git at all) has nothing to compare with: say so and pass.
.PHONY: buf-breaking
buf-breaking: $(BUF)
	@if git rev-parse --verify --quiet 'HEAD~1^{commit}' >/dev/null 2>&1; then \
		echo "$(BUF) breaking --against '.git#ref=HEAD~1'"; \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else \
		echo "buf-breaking: skipped: no previous commit in this clone (shallow or single-commit)"; \
	fi

# The shared-state tests start their own redis-server (Debian's package) on loopback.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

# The alert-rule and dashboard tests run promtool (Debian's prometheus package ships it;
# --no-install-recommends: not the node exporter, and no server is started).
.PHONY: promtool
promtool:
	@command -v promtool >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus)

pytest: $(STAMP) gen redis-server promtool
	$(VENV)/bin/pytest -q

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml clients/pyproject.toml dev/pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e ./clients -e '.[dev,bench]' -e ./dev
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) gen redis-server
	$(PY) -m bench $(BENCH_ARGS)

bench-vault: $(STAMP) gen
	$(PY) -m bench.vault_load --pin

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
