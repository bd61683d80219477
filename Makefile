# APInalytics — `make run` and `make test` set everything up on Debian/Ubuntu first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DASHBOARD := dashboard/node_modules/.package-lock.json

.PHONY: run test check lint typecheck pytest system setup bench-ingest bench-query bench-client clean fuzz

run: setup
	$(BIN)/apinalytics serve

test: setup check pytest

# System packages: PostgreSQL and TimescaleDB (built from source where unpackaged).
system:
	@bash scripts/install-system

setup: system $(STAMP) $(DASHBOARD)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q -e 'clients/python[aiohttp,flask,django]'
	@touch $@

# The dashboard's JavaScript dependency (uPlot), exactly as locked.
$(DASHBOARD): dashboard/package.json dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check service tests bench clients/python
	$(BIN)/ruff format --check service tests bench clients/python
	$(BIN)/hadolint docker/Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --config-file clients/python/pyproject.toml

pytest: $(STAMP)
	$(BIN)/pytest

# The OpenAPI contract against a live service, with many more generated requests than
# the suite's (tests/openapi/test_fuzz.py); FUZZ_EXAMPLES per operation.
FUZZ_EXAMPLES ?= 500
fuzz: setup
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/openapi/test_fuzz.py -p no:cacheprovider

bench-ingest: setup
	$(BIN)/python bench/ingest.py

bench-query: setup
	$(BIN)/python bench/query.py

bench-client: setup
	$(BIN)/python bench/client.py

clean:
	rm -rf $(VENV) .apinalytics .pytest_cache .mypy_cache .ruff_cache
