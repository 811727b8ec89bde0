# tweetshop: `make run` (everything, embedded, no Docker) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PKGS := -e libs/contracts -e libs/platform -e libs/devstack -e libs/cli \
        -e services/catalog -e services/feed -e services/checkout -e services/tracking -e services/webapp

.PHONY: install run test lint typecheck unit up down clean bench fuzz

$(STAMP): constraints.txt libs/*/pyproject.toml services/*/pyproject.toml requirements-dev.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt $(PKGS) -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m tweetshop_devstack.run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench.run_all

# The generated hostile-input tests (schemathesis on every OpenAPI document, hypothesis on every consumed topic)
# at a size too large for `make test`; FUZZ_EXAMPLES per operation / per topic, FUZZ_SEED to try other inputs.
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	TWEETSHOP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(if $(FUZZ_SEED),TWEETSHOP_FUZZ_SEED=$(FUZZ_SEED)) $(PY) -m pytest tests/security -p no:cacheprovider

up:
	docker compose up -d --build
	@echo "catalog http://localhost:8001  feed http://localhost:8002  checkout http://localhost:8003  tracking http://localhost:8004"

down:
	docker compose down

clean:
	rm -rf $(VENV) .run
