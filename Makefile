# Each target bootstraps .venv from the dev lock; nothing else is needed but Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions with hashes, resolved from pyproject.toml by `make lock` (README, "Dependencies").
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
# One lock serves every platform (markers kept), from the oldest supported Python up.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'

.PHONY: run test test-fast bench lint demo typecheck lock lock-upgrade

# pip check catches a lock older than pyproject.toml (a dependency added or a floor raised there).
$(STAMP): pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check || { echo "$(DEV_LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/concord serve

# All three folders of tests/ (pyproject.toml's testpaths), the quick ones first.
test: $(STAMP)
	$(BIN)/pytest -q

# The pure unit tests only: seconds, for while you edit.
test-fast: $(STAMP)
	$(BIN)/pytest -q tests/unit

# Three simulated stores issue documents through the coordinator `make run` started, from
# the checkout (simulator/ is not installed); options: make demo ARGS='--documents 30 --seed 7'.
demo: $(STAMP)
	$(BIN)/python -m simulator.demo $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.ledger_size
	$(BIN)/python -m bench.batches
	$(BIN)/python -m bench.agent_numbering
	$(BIN)/python -m bench.webservice
	$(BIN)/python -m bench.audit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Strict on the modules listed in pyproject.toml's [tool.mypy].
typecheck: $(STAMP)
	$(BIN)/mypy

# Re-resolves both locks after a change to pyproject.toml's dependencies, keeping every pin
# that still fits; lock-upgrade takes the newest releases instead. The production lock is
# constrained by the dev lock, so the two never pin different versions of a package.
lock: $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) --output-file $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml --constraint $(DEV_LOCK) $(LOCK_FLAGS) --output-file $(LOCK)

lock-upgrade: LOCK_FLAGS += --upgrade
lock-upgrade: lock

# Not through $(STAMP): a lock that no longer satisfies pyproject.toml must still be re-lockable.
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
