# The README's two commands: `make demo` and `make test`. Each sets up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test ui bench clean-home

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, from the local CPU wheel (a bare `torch` would pull a multi-GB CUDA build)
	$(PY) -m pip install -q "$$(grep -E '^torch==' requirements.lock)"
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Build the demo data, run the whole DAG through Airflow, serve on Triton, query it.
demo: $(STAMP)
	$(VENV)/bin/sail demo

# The test suite, with real Airflow, MLflow, DVC, Great Expectations and tritonserver.
test: $(STAMP)
	$(VENV)/bin/pytest -q

# Airflow (standalone) and MLflow UIs on 127.0.0.1.
ui: $(STAMP)
	$(VENV)/bin/sail ui

bench: $(STAMP)
	$(PY) bench/serving.py
