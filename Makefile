# The template's everyday commands (see README.md):
#   make demo   bake the defaults into ./demo/, set it up (venv, install, migrate, seed) and serve it
#   make test   run the template's whole test suite in parallel
#   make bench  bake, serve and measure (docs/performance.md); e.g. make bench ARGS="--quick"
.PHONY: demo test bench venv clean

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := demo
DEMO_PROJECT := $(DEMO_DIR)/chat_project

venv: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The bake prints its next steps (make setup, make seed, make run in ./demo/chat_project) and
# make demo then runs exactly those; a failed step stops it there, as it would by hand.
# Rebaking over an existing ./demo keeps its database and .venv; setup reinstalls and migrates
# (fast when nothing changed) and seeding is idempotent.
demo: venv
	$(BIN)/cookiecutter --no-input --default-config --overwrite-if-exists --output-dir $(DEMO_DIR) . setup_environment=false
	$(MAKE) --no-print-directory -C $(DEMO_PROJECT) PYTHON=$(PYTHON) setup seed run

test: venv
	$(BIN)/python -m pytest -n auto

bench: venv
	$(BIN)/python benchmarks/run.py $(ARGS)

clean:
	rm -rf build $(DEMO_DIR)
