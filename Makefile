# Two commands on a fresh machine: `make book` and `make test`.
# Both bootstrap .venv from requirements.txt and install the companion (editable);
# the bootstrap re-runs only when requirements.txt or pyproject.toml changed.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONUNBUFFERED := 1
# The website: the reference edition (book/_reference) where it is fresh; other chapters are
# executed in BOOK_PROFILE (default smoke: a minute per chapter on a laptop) under a banner saying so.
# STRICT=1 also counts a changed companion as stale.
BOOK_PROFILE ?= $(or $(TLBOOK_PROFILE),smoke)
STRICT ?=

.PHONY: setup book lab test lint format unit notebooks bench browser-check clean reference reference-stale reference-status mutants

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml binder/default_setting_overrides.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	mkdir -p $(VENV)/etc/jupyter/labconfig  # JupyterLab opens the chapters (.md) as notebooks (jupytext)
	cp binder/default_setting_overrides.json $(VENV)/etc/jupyter/labconfig/default_setting_overrides.json
	touch $@

# JupyterLab on the book: double-click a chapter in book/ and it opens as a notebook (jupytext).
# The kernel is .venv's Python, with the companion installed; chapters run in TLBOOK_PROFILE
# (default: full on CUDA, quick elsewhere).
lab: $(STAMP)
	@$(BIN)/python -c "import companion; p = companion.get_profile(); print(f'chapters will run in {p}; TLBOOK_PROFILE=smoke|quick|full make lab to change')"
	$(BIN)/jupyter lab --ServerApp.root_dir=book $(if $(filter 0,$(shell id -u)),--allow-root)

book: $(STAMP)
	TLBOOK_PROFILE=$(BOOK_PROFILE) TLBOOK_PROGRESS=0 TLBOOK_STRICT_REFERENCES=$(STRICT) $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "website: $(abspath _build/html/index.html)"

test: $(STAMP) lint
	$(BIN)/python tools/chapters_to_notebooks.py _build/nbval
	TLBOOK_PROFILE=smoke $(BIN)/python -m pytest tests _build/nbval --nbval-lax --nbval-current-env -p no:cacheprovider -rs

# ruff: lint and formatting of the code (configured in pyproject.toml); `make format` applies both.
LINTED := companion tests tools benchmarks edition
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/python -m edition.format_chapters

# The built website in headless Chromium: tracebacks, broken links, missing images; then a chapter
# opened in JupyterLab (it must open as a notebook). Screenshots in _build/screenshots.
browser-check: $(STAMP)
	$(BIN)/python tools/browser_check.py _build/html
	$(BIN)/python tools/lab_check.py

# The reference edition (book/_reference/): chapters executed in PROFILE (default: full on CUDA,
# quick elsewhere) and stored with their provenance. CHAPTER=three_modes runs one chapter.
reference: $(STAMP)
	$(BIN)/python -m edition run $(CHAPTER) $(if $(PROFILE),--profile $(PROFILE))

reference-stale: $(STAMP)
	$(BIN)/python -m edition run --stale $(if $(PROFILE),--profile $(PROFILE))

reference-status: $(STAMP)
	$(BIN)/python -m edition status

unit: $(STAMP)
	TLBOOK_PROFILE=smoke $(BIN)/python -m pytest tests -rs

# The peer benchmark runs fastai's own fine_tune: the `bench` extra of pyproject.toml, installed
# without fastai's declared dependencies (spacy and the text stack, which `fastai.vision` never imports).
BENCH_PACKAGES := fastai==2.8.12 fastcore==2.2.41 fasttransform==0.0.5 fastprogress==1.0.3 fastdownload==0.0.8 plum-dispatch==2.10.1 beartype==0.23.1
bench: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps $(BENCH_PACKAGES)
	$(BIN)/python -m benchmarks

# Mutation testing of the companion's core modules against the unit tests (mutmut; not in CI:
# over 2 h on 2 cores today, the goal is 1 h). Starts clean, because mutmut does not notice changed tests; records the
# kill rate per module in benchmarks/results.json and the survivors in benchmarks/mutants.md.
# MUTANTS="companion.train*" limits the run (its figures are then marked partial). The commit recorded
# is the one tested: taken before the run, since the tree may move on while it goes.
MUTANTS ?=
mutants: $(STAMP)
	rm -rf mutants
	commit=$$(git rev-parse --short HEAD)$$(git diff --quiet HEAD -- companion tests pyproject.toml || echo +dirty); \
	TLBOOK_TEST_THREADS=1 TLBOOK_PROGRESS=0 $(BIN)/mutmut run --max-children $(or $(JOBS),2) $(MUTANTS); \
	TLBOOK_COMMIT=$$commit $(BIN)/python -m benchmarks.mutation

clean:
	rm -rf _build .pytest_cache
