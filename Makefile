# tweetshop: `make run` (everything, embedded, no Docker) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCKED := $(VENV)/.locked
PKGS := -e libs/contracts -e libs/platform -e libs/devstack -e libs/cli \
        -e services/catalog -e services/feed -e services/checkout -e services/tracking -e services/webapp

.PHONY: install lock run test lint typecheck unit up down clean bench fuzz

# Third-party packages come only from the hashed lock files (lock/README.md): the installer and build backend
# (lock/build.txt) first, then the rest (lock/dev.txt) built with them; pip refuses a file whose hash is not there.
$(LOCKED): lock/build.txt lock/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r lock/build.txt
	$(PY) -m pip install -q --require-hashes --no-build-isolation -r lock/dev.txt
	@touch $(LOCKED)

# The local packages, editable, from the tree: --no-deps, nothing is resolved past the lock; pip check proves
# that the lock holds all they need.
$(STAMP): $(LOCKED) libs/*/pyproject.toml services/*/pyproject.toml Makefile
	$(PY) -m pip install -q --no-deps --no-build-isolation $(PKGS)
	@$(PY) -m pip check || { echo "lock/dev.txt lacks what a package needs: pin it in constraints.txt, run make lock" >&2; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# Regenerate lock/*.txt (for Python 3.11 on any OS and CPU, with every file's hash) from constraints.txt,
# requirements-dev.txt, lock/*.in and the packages' dependencies: after editing any of them. The other locks are
# resolved within lock/dev.txt (-c), so a package has the same version and hashes in all of them. Versions already
# locked stay unless a pin moves them: `make lock LOCK_FLAGS=--upgrade` takes the newest the pins allow.
UV_LOCK = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(LOCK_FLAGS) \
	--custom-compile-command "make lock" \
	$(foreach pkg,$(wildcard libs/*/pyproject.toml services/*/pyproject.toml),--no-emit-package tweetshop-$(notdir $(patsubst %/pyproject.toml,%,$(pkg))))
lock: $(LOCKED)
	$(UV_LOCK) -c constraints.txt lock/dev.in requirements-dev.txt -o lock/dev.txt
	$(UV_LOCK) -c lock/dev.txt lock/build.in -o lock/build.txt
	$(UV_LOCK) -c lock/dev.txt lock/services.in -o lock/services.txt
	$(UV_LOCK) -c lock/dev.txt lock/localstripe.in -o lock/localstripe.txt

run: $(STAMP)
	$(PY) -m tweetshop_devstack.run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck
	$(PY) -m pytest

# Only the tests that start nothing (no broker, database, Stripe or service process; fakes at most): seconds,
# for the edit-and-test loop. `make test` runs them too, with everything else.
UNIT_TESTS := $(wildcard libs/*/tests/unit services/*/tests/unit) libs/contracts/tests libs/cli/tests tests/docs
unit: $(STAMP)
	$(PY) -m pytest $(UNIT_TESTS)

bench: $(STAMP)
	$(PY) -m bench.run_all

# The generated hostile-input tests (schemathesis on every OpenAPI document, hypothesis on every consumed topic)
# at a size too large for `make test`; FUZZ_EXAMPLES per operation / per topic, FUZZ_SEED to try other inputs.
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	TWEETSHOP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(if $(FUZZ_SEED),TWEETSHOP_FUZZ_SEED=$(FUZZ_SEED)) $(PY) -m pytest tests/security -p no:cacheprovider

up:
	docker compose up -d --build
	@echo "web app http://localhost:8000"
	@echo "catalog http://localhost:8001  feed http://localhost:8002  checkout http://localhost:8003  tracking http://localhost:8004"

down:
	docker compose down

clean:
	rm -rf $(VENV) .run
