# Each target bootstraps .venv from pyproject.toml; nothing else is needed but Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/concord serve

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.ledger_size
	$(BIN)/python -m bench.batches
	$(BIN)/python -m bench.agent_numbering
	$(BIN)/python -m bench.webservice
	$(BIN)/python -m bench.audit

lint: $(STAMP)
	$(BIN)/ruff check .
