# silo-router: `make run` (the edge with demo regions) and `make test` work on a bare machine with Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck check bench faults clean providers-doc

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/silo-router up --config examples/silo-router.yaml --directory examples/directory.yaml --demo-upstreams

test: $(STAMP)
	$(BIN)/ruff check sidecar tests
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

providers-doc: $(STAMP)
	$(BIN)/python -m sidecar.catalog README.md

clean:
	rm -rf $(VENV) .silo-router build *.egg-info
