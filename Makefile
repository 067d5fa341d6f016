# The README's commands. Everything installs into .venv from the pinned lock.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast lint lock audit up down clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	@echo "==> creating $(VENV) and installing the lock (uv $(UV_VERSION))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

demo: install  ## generate synthetic data, run prepare -> train -> score through Airflow, print verdicts
	MEDIACHECK_CONFIG=$${MEDIACHECK_CONFIG:-configs/demo.yaml} $(BIN)/python scripts/demo.py

test: install  ## the whole test suite against real components
	$(BIN)/python -m pytest

test-fast: install  ## skip the slow training and DAG tests
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check pipeline dags plugins tests scripts bench

lock:  ## recompile requirements.txt from requirements.in
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11

AUDIT_VENV := .audit-venv
audit:  ## check the lock for known vulnerabilities (pip-audit, in an environment of its own)
	@test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-audit.txt; }
	$(AUDIT_VENV)/bin/python scripts/audit.py $(AUDIT_FLAGS)

up: install  ## Airflow, MLflow UI and the embedded MongoDB on 127.0.0.1
	MEDIACHECK_CONFIG=$${MEDIACHECK_CONFIG:-configs/demo.yaml} $(BIN)/python scripts/stack.py up

down:
	$(BIN)/python scripts/stack.py down

clean: down
	rm -rf .data .airflow
