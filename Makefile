# The README's two commands: `make demo` and `make test`. Each sets up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps demo test test-fast test-integration ui bench
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Debian's espeak-ng speaks each demo item's "ASR" audio track.
system-deps:
	@command -v espeak-ng >/dev/null || { \
	  echo "installing espeak-ng (Debian) for the demo's spoken audio tracks"; \
	  ( $(SUDO) apt-get install -y -qq espeak-ng || ( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng ) ) >/dev/null 2>&1 \
	  || { echo "espeak-ng is missing and could not be installed; run: sudo apt-get install espeak-ng"; exit 1; }; }
	@# Debian's postgresql: the multi-worker test runs Airflow and MLflow on a throw-away local server
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  echo "installing postgresql (Debian) for the multi-worker test"; \
	  ( $(SUDO) apt-get install -y -qq postgresql || ( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql ) ) >/dev/null 2>&1 \
	  || { echo "postgresql is missing and could not be installed; run: sudo apt-get install postgresql"; exit 1; }; }

$(STAMP): requirements.lock pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	@# torch first, from the local CPU wheel (a bare `torch` would pull a multi-GB CUDA build)
	$(PY) -m pip install -qq "$$(grep -E '^torch==' requirements.lock)"
	$(PY) -m pip install -qq --no-deps -r requirements.lock
	$(PY) -m pip install -qq --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Build the demo data, run the whole DAG through Airflow, serve on Triton, query it.
demo: $(STAMP)
	$(VENV)/bin/sail demo

# The test suite, with real Airflow, MLflow, DVC, Great Expectations and tritonserver, in random order
# (pytest-randomly; the seed is printed at the end with the command that replays that order), on 2 worker
# processes (pytest-xdist; a module's tests stay on one worker, so module fixtures are built once).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/pytest -q -p randomly -n $(TEST_WORKERS) --dist loadscope

# Everything but the integration groups (pyproject.toml markers): under 2 minutes on 2 cores.
INTEGRATION := slow or airflow or triton or dvc or distributed or export or train
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -p randomly -m "not ($(INTEGRATION))"

# Only the integration groups.
test-integration: $(STAMP)
	$(VENV)/bin/pytest -q -p randomly -m "$(INTEGRATION)"

# Airflow (standalone) and MLflow UIs on 127.0.0.1.
ui: $(STAMP)
	$(VENV)/bin/sail ui

bench: $(STAMP)
	$(PY) bench/serving.py
