# Everything runs from a virtualenv this Makefile creates from pinned requirements.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help test lint services clean

help:
	@echo "make test      lint + every test (creates $(VENV) on first use)"
	@echo "make services  the four shop services natively on 127.0.0.1:8081-8084, in the foreground"
	@echo "make clean     remove $(VENV) and the native services' data"

$(BIN)/.installed: apps/requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Grafana's LogQL/TraceQL grammars (npm), for the dashboard query tests.
GRAMMARS := tests/grammar/node_modules/.installed
$(GRAMMARS): tests/grammar/package.json tests/grammar/package-lock.json
	npm ci --prefix tests/grammar --no-audit --no-fund --loglevel=error
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(GRAMMARS)
	$(BIN)/pytest

services: $(BIN)/.installed
	PYTHONPATH=apps $(BIN)/python -m shoplib.run

clean:
	rm -rf $(VENV) data reports tests/grammar/node_modules
