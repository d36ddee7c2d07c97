# Two commands: `make demo` and `make test`. Both set up first: a virtual
# environment (.venv, or the one already active), torch, then aimmat.
#
# torch: without an NVIDIA driver we pin torch==2.13.0, which on our CI
# machines resolves to a local CPU-only wheel (1.7 GB environment instead of
# 6 GB). With `nvidia-smi` present, pip takes PyPI's CUDA build. Override with
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aimmat-installed
ifeq ($(shell command -v nvidia-smi),)
TORCH_SPEC ?= torch==2.13.0
else
TORCH_SPEC ?= torch>=2.2
endif
JOBS ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo qe-demo test quick clean-demo sysdeps qe browser

# Quantum ESPRESSO from Debian, with OpenBLAS (Debian's pw.x otherwise links
# the reference BLAS: a 64-atom SCF iteration is about 4x slower).
qe:
	@if ! command -v pw.x >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0 -a ! -e /usr/lib/aarch64-linux-gnu/libopenblas.so.0 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq quantum-espresso libopenblas0-pthread >/dev/null; \
	  else \
	    echo "error: pw.x (Quantum ESPRESSO) is missing; install it with:" >&2; \
	    echo "  sudo apt-get install quantum-espresso libopenblas0-pthread" >&2; exit 5; \
	  fi; \
	fi

sysdeps:
	@if ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-dev; \
	  else \
	    echo "error: Python 3.11 with venv is required: sudo apt-get install python3 python3-venv" >&2; exit 5; \
	  fi; \
	fi

$(PY): | sysdeps
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(STAMP) qe browser

# Debian's Chromium: the HTML campaign report is checked in a headless browser.
browser:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium missing (sudo apt-get install chromium); the HTML report test will be skipped" >&2; \
	  fi; \
	fi

demo: setup
	$(VENV)/bin/aimmat apply manifests/demo.yaml --jobs $(JOBS)
	@echo; echo "== second look: aimmat diff (nothing should be left to do) =="
	$(VENV)/bin/aimmat diff manifests/demo.yaml --exit-code
	@echo; echo "== aimmat status =="
	$(VENV)/bin/aimmat status manifests/demo.yaml -v
	@echo; echo "== generated sets: ranking by the model's predicted tensor (top 2 per set went to CHGNet) =="
	@cat campaigns/demo/manuscript/shortlist.md
	@echo; echo "Rendered tables, figures and the HTML report (aimmat render manifests/demo.yaml):"
	@ls campaigns/demo/manuscript campaigns/demo/manuscript/figures
	@echo "open campaigns/demo/manuscript/report.html; manuscript: campaigns/demo/manuscript/main.md"

qe-demo: setup
	$(VENV)/bin/aimmat apply manifests/qe-demo.yaml --jobs $(JOBS)
	$(VENV)/bin/aimmat diff manifests/qe-demo.yaml --exit-code
	$(VENV)/bin/aimmat status manifests/qe-demo.yaml -v

clean-demo:
	rm -rf campaigns/demo

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

quick: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)
