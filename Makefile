# The README's commands. Everything installs into .venv from the pinned lock.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast lint lock audit up cluster status down clean docs docs-serve FORCE

# Which lock .venv gets: GPU=1 the CUDA build of TensorFlow (requirements-gpu.txt), GPU=0 the CPU
# build (requirements.txt); without GPU, the one already installed (the stamp records it; an empty
# stamp predates GPU=1), else the CPU lock. Switching uninstalls what only the old lock has.
ifneq ($(filter-out 0 1,$(GPU)),)
$(error GPU must be 1 (CUDA TensorFlow) or 0 (CPU TensorFlow), not "$(GPU)")
endif
INSTALLED_LOCK := $(or $(shell cat $(VENV)/.installed 2>/dev/null),$(if $(wildcard $(VENV)/.installed),requirements.txt))
LOCK := $(if $(GPU),$(if $(filter 1,$(GPU)),requirements-gpu.txt,requirements.txt),$(or $(INSTALLED_LOCK),requirements.txt))
LOCK_SWITCH := $(and $(INSTALLED_LOCK),$(filter-out $(INSTALLED_LOCK),$(LOCK)))
lock_names = sed -n 's/^\([A-Za-z0-9._-]*\)==.*/\1/p' $(1) | sort

install: $(VENV)/.installed

$(VENV)/.installed: $(LOCK) pyproject.toml $(if $(LOCK_SWITCH),FORCE)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	@echo "==> creating $(VENV) and installing $(LOCK) (uv $(UV_VERSION))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
ifneq ($(LOCK_SWITCH),)
	$(BIN)/uv pip uninstall --quiet --python $(BIN)/python $$(comm -23 <($(call lock_names,$(INSTALLED_LOCK))) <($(call lock_names,$(LOCK))))
endif
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@echo $(LOCK) > $@

FORCE:

demo: install  ## generate synthetic data, run prepare -> train -> score through Airflow, print verdicts
	MEDIACHECK_CONFIG=$${MEDIACHECK_CONFIG:-configs/demo.yaml} $(BIN)/python scripts/demo.py

test: install  ## the whole test suite against real components
	$(BIN)/python -m pytest

test-fast: install  ## skip the slow training and DAG tests
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check pipeline dags plugins tests scripts bench docs/hooks

# The GPU lock: requirements.in with tensorflow-cpu swapped for tensorflow[and-cuda] (same version),
# every package the two share held to requirements.txt's version.
GPU_LOCK_HEADER := make lock   \# requirements.in, tensorflow-cpu -> tensorflow[and-cuda], at requirements.txt's versions
lock:  ## recompile requirements.txt and requirements-gpu.txt from requirements.in
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11
	sed -n 's/^tensorflow-cpu\(==[^ ]*\).*/tensorflow[and-cuda]\1/p' requirements.in \
	  | $(BIN)/uv pip compile requirements.in - --excludes <(echo tensorflow-cpu) -c requirements.txt \
	      -o requirements-gpu.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	      --custom-compile-command "$(GPU_LOCK_HEADER)"

AUDIT_VENV := .audit-venv
audit:  ## check the lock for known vulnerabilities (pip-audit, in an environment of its own)
	@test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-audit.txt; }
	$(AUDIT_VENV)/bin/python scripts/audit.py $(AUDIT_FLAGS)

up: install  ## Airflow, MLflow UI and the embedded MongoDB on 127.0.0.1, supervised; waits until all are healthy
	MEDIACHECK_CONFIG=$${MEDIACHECK_CONFIG:-configs/demo.yaml} $(BIN)/python scripts/stack.py up

cluster: install  ## docker-compose.yaml's topology without Docker: PostgreSQL, Redis, MLflow server, CeleryExecutor, 2 workers
	MEDIACHECK_CONFIG=$${MEDIACHECK_CONFIG:-configs/demo.yaml} $(BIN)/python scripts/cluster.py up

status:  ## each component of `make up`: state, pid, uptime, restarts, last exit, log; exit 0 only if all are healthy
	$(BIN)/python scripts/stack.py status

down:
	$(BIN)/python scripts/stack.py down

docs: install  ## the docs site into site/; a broken link, anchor or page left out of the nav fails it
	$(BIN)/python -m mkdocs build --strict --site-dir site

docs-serve: install  ## the docs site on http://127.0.0.1:8000, rebuilt on every change
	$(BIN)/python -m mkdocs serve

clean: down
	rm -rf .data .airflow .airflow-cluster
