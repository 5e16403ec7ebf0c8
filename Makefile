# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Both install what they need: a virtual environment with the package, Kafka's jars
# (fetched by `ledger dev up` with Maven on first use) and PostgreSQL's server binaries.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench bench-large faults install postgres-binaries clean

$(STAMP): pyproject.toml setup.py ledger/wire/_eventreader.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) postgres-binaries

postgres-binaries:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL server binaries (apt-get install postgresql)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

demo: install
	$(BIN)/ledger demo

test: install
	$(BIN)/ruff check ledger projections cli tests bench faults devstack
	$(BIN)/mypy
	$(BIN)/pytest -p no:cacheprovider --durations=15

bench: install
	$(BIN)/python -m bench

bench-large: install
	$(BIN)/python -m bench --events 10000000

faults: install
	$(BIN)/pytest -m slow -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
