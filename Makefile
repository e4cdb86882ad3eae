# Two commands do all the set-up: `make demo` and `make test`.
# A virtual environment is created in .venv unless one is already active.
SHELL := /bin/bash
PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m online_cnmfe demo

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: install lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
