# labscale — `make demo` runs the demo study, `make test` runs the tests (both install first).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

# torch first, from its CPU wheel, so nothing resolves a multi-GB CUDA build; then everything else
# pinned in pyproject.toml (the ml extra pins torch==2.13.0 too, which the CPU wheel satisfies).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[ml,cloud,dev]"
	touch $@

demo: setup
	$(VENV)/bin/labscale run studies/demo.yaml

test: setup
	$(VENV)/bin/pytest -q -ra

test-fast: setup
	$(VENV)/bin/pytest -q -ra -m "not slow"

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf .labscale build *.egg-info
