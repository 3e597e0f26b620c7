# Two entry points: `make run` and `make test`. Both set up .venv from the pinned
# constraints first (idempotent: a stamp file records the constraints it was built from).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt

.PHONY: setup run test bench clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" wheel "setuptools>=68"
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

run: setup
	$(VENV)/bin/zprime-grad run --out outputs

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/generate.py

clean-data:
	rm -rf outputs data/generated
