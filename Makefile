# silo-router: `make run` (the edge with demo regions) and `make test` work on a bare machine with Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck check bench faults fuzz clean providers-doc

# setup.py compiles protos/ into sidecar/protos/ during the install: a changed proto reinstalls.
$(STAMP): pyproject.toml setup.py $(shell find protos -name '*.proto')
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
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
		{ echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	@$(BIN)/python -c "import matplotlib, uvloop" 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# Fault injection under load (tests/faults): longer phases and more rounds than in `make test`.
# Figures: build/reliability/fault-*.json and the summary at the end (docs/reliability.md).
FAULT_PHASE_S ?= 5
FAULT_ROUNDS  ?= 3
faults: $(STAMP)
	SILO_FAULT_PHASE_S=$(FAULT_PHASE_S) SILO_FAULT_ROUNDS=$(FAULT_ROUNDS) $(BIN)/pytest -q -p no:cacheprovider tests/faults

# Fuzzing: the hypothesis fuzz profile (tests/fuzz), then coverage-guided atheris on the same
# targets (the `fuzz` extra). FUZZ_SCALE scales both (0.1 for a quick look).
FUZZ_SCALE ?= 1
fuzz: $(STAMP)
	@$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install --quiet -e '.[fuzz]'
	HYPOTHESIS_PROFILE=fuzz SILO_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest -q -p no:cacheprovider tests/fuzz
	$(BIN)/python tests/fuzz/atheris_fuzz.py --scale $(FUZZ_SCALE)
	$(BIN)/python tests/fuzz/fuzz_report.py

providers-doc: $(STAMP)
	$(BIN)/python -m sidecar.catalog README.md

clean:
	rm -rf $(VENV) .silo-router build *.egg-info
