# lesson-ledger: `make run` serves the ledger, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean event-schema event-corpus

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lesson-ledger serve

lint: $(STAMP)
	$(BIN)/ruff check domain projections adapters tests benchmarks
	$(BIN)/ruff format --check domain projections adapters tests benchmarks
	$(BIN)/mypy --strict domain projections adapters benchmarks tests
	$(BIN)/python -m tests.support.layers

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# After changing an event class: record its new version and rewrite docs/events.md.
event-schema: $(STAMP)
	$(BIN)/python -m tests.support.event_schema

# The current release's stored events, for the tests of every later release.
event-corpus: $(STAMP)
	$(BIN)/python -m tests.support.event_corpus

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
