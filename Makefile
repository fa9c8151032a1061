# The README's two commands: `make demo` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint venv services bench clean

$(STAMP): pyproject.toml
	@bash scripts/ensure_python.sh $(PYTHON)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

services:
	@bash scripts/ensure_services.sh

# Everything on embedded defaults: a broker (started if none is reachable), simulated homes,
# the flow and SQLite. Runs until Ctrl-C, or DURATION seconds if given.
demo: venv
	@bash scripts/ensure_services.sh mosquitto
	$(BIN)/shems demo $(if $(DURATION),--duration $(DURATION),)

# Static checks first: they take seconds, the suite takes minutes.
lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

# The suite runs on TEST_WORKERS processes (pytest-xdist), a test file per worker at a time:
# every test has its own database, topic prefix and client id, so they cannot see each other.
TEST_WORKERS ?= 2
test: lint services
	@bash scripts/ensure_tools.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: venv services
	$(BIN)/shems bench ingest --devices 10000 --seconds 20

clean:
	rm -rf $(VENV) .shems .pytest_cache .hypothesis .mypy_cache
