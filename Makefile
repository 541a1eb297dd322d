# The course's two commands are `make lab` and `make test` (see README.md). Everything else is for developers.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
# The Python .venv is built from: PYTHON=... if given (`make lab PYTHON=python3.12`), otherwise the one .venv was
# built from, otherwise the first supported one on PATH. tools/find_python.sh checks it (or finds one) and, when
# there is none, says which versions are supported.
# $(WANTED): "X.Y.Z /real/path" of the chosen interpreter; $(BUILT): the same for the one .venv was built from.
WANTED := $(VENV)/.python-wanted
BUILT := $(VENV)/.python
PORT ?= 8888
# Strict nbval over the notebooks named after it; $(NBVAL) over every notebook.
NBVAL_ON := $(PY) -m pytest --nbval --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=300 -p no:cacheprovider -o testpaths=notebooks
NBVAL := $(NBVAL_ON) notebooks/

.DEFAULT_GOAL := help
.PHONY: help setup lab test unit nbval portability notebooks site bench lint browser-deps clean FORCE

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# Runs on every make that needs the venv (cheap: a few interpreters asked their version); touches $(WANTED)
# only when the choice differs from the last one, so the stamp below is remade only then. Without PYTHON=, the
# Python .venv was built from stays the choice while it still runs and is supported.
$(WANTED): FORCE
	@if [ -z '$(PYTHON)' ] && [ -f $(BUILT) ]; then \
	    read -r _ built < $(BUILT); choice=$$(PYTHON="$$built" sh tools/find_python.sh 2>/dev/null); \
	fi; \
	[ -n "$$choice" ] || choice=$$(PYTHON='$(PYTHON)' sh tools/find_python.sh) || exit 1; \
	if [ "$$choice" != "$$(cat $@ 2>/dev/null)" ]; then mkdir -p $(VENV) && echo "$$choice" > $@; fi

# The venv is updated when requirements.txt changes (the stamp records the list it was built from) and rebuilt
# from scratch when the chosen Python is not the one it was built from. A .venv made before the choice was
# recorded is kept when its Python has the chosen X.Y.
$(STAMP): requirements.txt pyproject.toml $(WANTED)
	@read -r version interpreter < $(WANTED); choice="$$version $$interpreter"; \
	if [ -x $(PY) ] && [ ! -f $(BUILT) ] \
	   && [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$${version%.*}" ]; then \
	    echo "$$choice" > $(BUILT); \
	fi; \
	if [ -x $(PY) ] && [ "$$(cat $(BUILT) 2>/dev/null)" != "$$choice" ]; then \
	    echo "Python changed ($(VENV) was built from: $$(cat $(BUILT) 2>/dev/null || echo unknown); now: $$choice): rebuilding $(VENV)"; \
	    rm -rf $(VENV); \
	fi; \
	if [ ! -x $(PY) ]; then \
	    echo "Creating $(VENV) with Python $$version ($$interpreter)"; \
	    "$$interpreter" -m venv $(VENV) || exit 1; \
	    echo "$$choice" > $(WANTED); echo "$$choice" > $(BUILT); \
	fi
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m utils._guard >/dev/null  # a learner's own utils.py beside a notebook gets an explanation, not the kit's place
	@cp requirements.txt $(STAMP)

setup: $(STAMP) ## Create .venv (or reuse it) and install the pinned list
	@echo "Environment ready: $(VENV) ($$($(PY) -c 'import sys, torch; print("Python %d.%d.%d," % sys.version_info[:3], "torch", torch.__version__)'))"

lab: setup ## Open the course in JupyterLab (on a headless server it prints the URL with its token)
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=$(CURDIR) \
	    $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/00_start_here.ipynb

# `make test` runs its stages one after another and prints how long each took (tools/stages.py); the first
# stage that fails stops it with that stage's exit status. The browser stage (+browser) runs beside nbval:
# it waits on JupyterLab and Chromium much of the time, and the two together take about 20 s less than one
# after the other (its output is shown after nbval's). Unit tests: everything under tests/ but the
# browser folder, on $(UNIT_WORKERS) processes (pytest-xdist; each test module stays on one process, the
# modules with a shared fixture first: tests/conftest.py; UNIT_WORKERS=0: one process), nbval's
# plugin left out (seconds of imports per process). Their JUnit XML feeds `make slowest`. Browser: all of
# tests/browser (the site build and link checks too); the Chromium tests skip with "browser tests skipped:
# Chromium not installed" when it is not. nbval: one notebook per process, $(UNIT_WORKERS) at a time (a notebook
# waits on its kernel and its ranks much of the time). Portability: `make portability` (below).
UNIT_WORKERS ?= 2
UNIT := $(PY) -m pytest -q -m "not browser" --ignore=tests/browser -p no:nbval -n $(UNIT_WORKERS) --dist loadfile --no-loadscope-reorder
BROWSER := $(PY) -m pytest -q tests/browser

test: setup ## Run every test, stage by stage with its time: layer rules, unit, browser (if Chromium is here), nbval, portability
	@mkdir -p test-output
	@$(PY) -m tools.stages --title "make test: stage times" \
	    'layer rules=$(VENV)/bin/lint-imports --no-cache' \
	    'unit=$(UNIT) --junitxml=test-output/junit-unit.xml -o junit_family=xunit1' \
	    '+browser=$(BROWSER)' \
	    'nbval=$(NBVAL) -q -n $(UNIT_WORKERS) --dist loadfile' \
	    'portability=$(MAKE) --no-print-directory portability'

unit: setup ## Unit tests only, on two processes (UNIT_WORKERS=n to change); `make slowest` then lists the slowest
	@mkdir -p test-output
	$(UNIT) --junitxml=test-output/junit-unit.xml -o junit_family=xunit1

.PHONY: slowest
slowest: ## The ten slowest unit tests and test files of the last `make test` or `make unit`
	@$(PY) -m tools.slowest_tests

nbval: setup ## Strict nbval over every notebook only
	$(NBVAL) -q

# The portability check: strict nbval again, under two other numeric settings, of the notebooks whose outputs
# touch learned or float-summed numbers. Stored outputs must not change: torch's baseline kernels stand in for
# another CPU (no AVX2/AVX-512); MKL's bitwise-compatible path on one thread for another BLAS order. The two
# runs go side by side (each is mostly one thread); each writes its log to test-output/.
PORTABLE_NOTEBOOKS := notebooks/01_toy_moe.ipynb notebooks/02_expert_parallelism.ipynb \
                      notebooks/06_fp8_mixed_precision.ipynb notebooks/07_capstone_dashboard.ipynb
portability: setup ## Strict nbval of the notebooks with learned outputs under other numeric settings
	@mkdir -p test-output; \
	ATEN_CPU_CAPABILITY=default $(NBVAL_ON) -q $(PORTABLE_NOTEBOOKS) > test-output/portability-baseline-kernels.log 2>&1 & isa=$$!; \
	MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 $(NBVAL_ON) -q $(PORTABLE_NOTEBOOKS) > test-output/portability-mkl-compatible.log 2>&1; mkl=$$?; \
	wait $$isa; isa=$$?; \
	echo "ATEN_CPU_CAPABILITY=default:             $$(tail -n 1 test-output/portability-baseline-kernels.log)"; \
	echo "MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1:  $$(tail -n 1 test-output/portability-mkl-compatible.log)"; \
	if [ $$isa -ne 0 ] || [ $$mkl -ne 0 ]; then \
	    echo "portability: a stored output changed under another numeric setting (logs in test-output/)"; \
	    grep -h -A25 "Cell outputs differ" test-output/portability-*.log | head -n 80; exit 1; \
	fi

notebooks: setup ## Re-execute every notebook in place in a fresh kernel (refreshes stored outputs)
	$(PY) -m tools.notebooks run notebooks/*.ipynb

site: setup ## Build the course's website from the committed notebooks and lessons (no execution) into _site/
	$(PY) -m tools.site

bench: setup ## Print the benchmark tables (performance targets with ratios against a reference)
	$(PY) -m benchmarks

lint: setup ## ruff over the code, and the library's layer rules (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check utils tests benchmarks tools book/_ext
	$(VENV)/bin/lint-imports --no-cache

clean: ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis test-output _site
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
