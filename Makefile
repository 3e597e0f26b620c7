# Two entry points: `make run` and `make test`. Both set up .venv from the pinned
# constraints first (idempotent: a stamp file records the constraints it was built from).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt

.PHONY: setup run test test-fast bench clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" wheel "setuptools>=68"
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

run: setup
	$(VENV)/bin/zprime-grad run --out outputs

# Two pytest processes (one per core), each test file on one of them so module fixtures are built once,
# files in the order tests/conftest.py gives (the unit layer, then the longest files);
# tests/unit (the pure modules) is collected first and is `make test-fast` on its own.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test-fast: setup
	$(PY) -m pytest -q -n 2 tests/unit

bench: setup
	$(PY) benchmarks/generate.py

clean-data:
	rm -rf outputs data/generated
