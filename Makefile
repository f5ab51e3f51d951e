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

# Rebaking over an existing ./demo keeps its database and .venv; the hook reinstalls and
# migrates (fast when nothing changed) and seeding is idempotent.
demo: venv
	$(BIN)/cookiecutter --no-input --default-config --overwrite-if-exists --output-dir $(DEMO_DIR) . setup_environment=true
	cd $(DEMO_PROJECT) && .venv/bin/python manage.py runserver 127.0.0.1:8000

test: venv
	$(BIN)/python -m pytest -n auto

bench: venv
	$(BIN)/python benchmarks/run.py $(ARGS)

clean:
	rm -rf build $(DEMO_DIR)
