# tweetshop: `make run` (everything, embedded, no Docker) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PKGS := -e libs/contracts -e libs/platform -e libs/devstack -e libs/cli \
        -e services/catalog -e services/feed -e services/checkout -e services/tracking -e services/webapp

.PHONY: install run test lint typecheck unit up down clean bench

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

up:
	docker compose up -d --build
	@echo "catalog http://localhost:8001  feed http://localhost:8002  checkout http://localhost:8003  tracking http://localhost:8004"

down:
	docker compose down

clean:
	rm -rf $(VENV) .run
