# The two commands of the README, plus the developer's lint.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install browser clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole stack in the foreground on embedded servers (Ctrl-C stops it)
run: $(STAMP)
	$(BIN)/syncguard up

## browser: Debian's chromium for the dashboard's browser test (no browser download works here)
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## test: the whole suite against real PostgreSQL and Redis (and headless chromium)
test: $(STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: every benchmark against its peer in one run (BENCH_QUICK=1: under three minutes)
bench: $(STAMP)
	$(BIN)/python -m bench.run

## lint: ruff and mypy --strict on the packages
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
