# labscale — `make demo` runs the demo study, `make test` runs the tests (both install first).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup system-deps demo test test-fast bench clean

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

# The real servers the integration tests start on 127.0.0.1 (Prometheus, Pushgateway, promtool)
# come from Debian. Installed when missing and we are root; otherwise those tests skip (fail in CI).
SYSTEM_BINARIES := promtool prometheus prometheus-pushgateway
system-deps:
	@if [ $$(command -v $(SYSTEM_BINARIES) | wc -l) -ne 3 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >/dev/null; \
	  else echo "note: $(SYSTEM_BINARIES) missing and not root — their tests will skip; install Debian's prometheus and prometheus-pushgateway"; fi; \
	fi

test: setup system-deps
	$(VENV)/bin/pytest -q -ra

test-fast: setup system-deps
	$(VENV)/bin/pytest -q -ra -m "not slow"

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf .labscale build *.egg-info
