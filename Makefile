# The course's two commands are `make lab` and `make test` (see README.md). Everything else is for developers.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
PORT ?= 8888
NBVAL := $(PY) -m pytest --nbval notebooks/ --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=300 -p no:cacheprovider -o testpaths=notebooks

.DEFAULT_GOAL := help
.PHONY: help setup lab test unit nbval notebooks bench lint browser-deps clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# The venv is rebuilt only when requirements.txt changes (the stamp records the list it was built from).
$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Need $(PYTHON) (Python 3.11). Set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m utils._guard >/dev/null  # a learner's own utils.py beside a notebook gets an explanation, not the kit's place
	@cp requirements.txt $(STAMP)

setup: $(STAMP) ## Create .venv (or reuse it) and install the pinned list
	@echo "Environment ready: $(VENV) ($$($(PY) -c 'import torch; print("torch", torch.__version__)'))"

lab: setup ## Open the course in JupyterLab (on a headless server it prints the URL with its token)
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=$(CURDIR) \
	    $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/00_start_here.ipynb

test: setup ## Run every test: layer rules, unit tests, strict nbval over every notebook, browser tests if Chromium is here
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q
	$(NBVAL) -q

unit: setup ## Unit tests only
	$(PY) -m pytest -q -m "not browser"

nbval: setup ## Strict nbval over every notebook only
	$(NBVAL) -q

notebooks: setup ## Re-execute every notebook in place in a fresh kernel (refreshes stored outputs)
	$(PY) -m tools.notebooks run notebooks/*.ipynb

bench: setup ## Print the benchmark tables (performance targets with ratios against a reference)
	$(PY) -m benchmarks

lint: setup ## ruff over the code, and the library's layer rules (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check utils tests benchmarks tools
	$(VENV)/bin/lint-imports --no-cache

clean: ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis test-output
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
