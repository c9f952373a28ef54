# The two commands of the README, plus developer helpers.
#   make demo   install lfdm in .venv and run the main job (writes outputs/demo.gif)
#   make test   install lfdm with its dev tools in .venv and run the whole test suite
# Both work on a fresh machine with Python 3.11 and nothing else installed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: demo test install install-dev readme export clean-nbs bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned, so that pip takes the local CPU wheel instead of a multi-GB CUDA build.
install: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"

demo: install
	$(BIN)/lfdm demo --out outputs/demo.gif

# pytest runs every notebook, checks nbdev sync and README, and the plain tests.
# Exit code 5 (no tests collected) fails like any other non-zero code.
# Two pytest-xdist workers (one thread each; tests/conftest.py orders the tests so that the two share the load).
TEST_WORKERS ?= 2
test: install-dev
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist load --maxschedchunk 2 tests

# Developer helpers (need install-dev).
export:
	$(BIN)/nbdev_export
clean-nbs:
	$(BIN)/nbdev_clean
readme:
	$(BIN)/python tests/readme.py --write

bench:
	$(BIN)/python benchmarks/bench_data.py > benchmarks/results/data.txt.new && mv benchmarks/results/data.txt.new benchmarks/results/data.txt && cat benchmarks/results/data.txt   # the README's data table is this file (tests/test_readme_numbers.py)
