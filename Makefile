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

.PHONY: setup demo qe-demo test quick test-heavy clean-demo sysdeps qe browser slurm slurm-stop slurm-status slurm-for-tests

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
	@echo; echo "== one learning cycle, CHGNet as the oracle: aimmat model update =="
	$(VENV)/bin/aimmat model update manifests/demo.yaml
	$(PY) scripts/demo_cycle.py manifests/demo.yaml campaigns/demo-cycle1.yaml
	@echo; echo "== a pre-registered rerun wave: frozen before it runs =="
	$(VENV)/bin/aimmat waves freeze campaigns/demo-cycle1.yaml extend-1
	$(VENV)/bin/aimmat apply campaigns/demo-cycle1.yaml --jobs $(JOBS)
	@echo; echo "== second look: aimmat diff (nothing should be left to do) =="
	$(VENV)/bin/aimmat diff campaigns/demo-cycle1.yaml --exit-code
	@echo; echo "== MPContribs payloads (dry run: written and validated, nothing uploaded) =="
	$(VENV)/bin/aimmat publish manifests/demo.yaml --dry-run | tail -1
	$(VENV)/bin/aimmat render campaigns/demo-cycle1.yaml | tail -1
	@echo; echo "== aimmat status =="
	$(VENV)/bin/aimmat status campaigns/demo-cycle1.yaml -v
	@echo; echo "== generated sets: ranking by the model's predicted tensor (top 2 per set went to CHGNet) =="
	@cat campaigns/demo/manuscript/shortlist.md
	@echo; echo "== the learning cycle: holdout before / after, shortlist conversion per checkpoint =="
	@cat campaigns/demo/manuscript/learning.md
	@echo; echo "== the rerun wave: selected, converted, and by what =="
	@cat campaigns/demo/manuscript/waves.md
	@echo; echo "Rendered tables, figures and the HTML report (aimmat render manifests/demo.yaml):"
	@ls campaigns/demo/manuscript campaigns/demo/manuscript/figures
	@echo "open campaigns/demo/manuscript/report.html; manuscript: campaigns/demo/manuscript/main.md"

qe-demo: setup
	$(VENV)/bin/aimmat apply manifests/qe-demo.yaml --jobs $(JOBS)
	$(VENV)/bin/aimmat diff manifests/qe-demo.yaml --exit-code
	$(VENV)/bin/aimmat status manifests/qe-demo.yaml -v

clean-demo:
	rm -rf campaigns/demo campaigns/demo-cycle1.yaml

# A one-node Slurm cluster on this machine (Debian's slurm-wlm and munge), for
# tests/apply/test_slurm.py: `make slurm` installs (apt-get, as root) and starts
# munged, slurmctld and slurmd, and does nothing when the cluster already runs;
# `make slurm-stop` stops the daemons it started, and only those.
slurm:
	@scripts/slurm-local.sh start

slurm-stop:
	@scripts/slurm-local.sh stop

slurm-status:
	@scripts/slurm-local.sh status

# `make test` starts the cluster when it runs as root, but never fails on it:
# without Slurm the Slurm tests skip, naming why.
slurm-for-tests:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "note: not root: no local Slurm cluster started (sudo make slurm); tests/apply/test_slurm.py will skip" >&2; \
	elif ! scripts/slurm-local.sh start; then \
	  echo "note: local Slurm cluster not started (reason above); tests/apply/test_slurm.py will skip" >&2; \
	fi

test: setup slurm-for-tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

quick: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# metals converged to C44 with real pw.x (about an hour per metal on 2 cores)
test-heavy: setup
	AIMMAT_HEAVY=1 $(PY) -m pytest -q -m heavy $(PYTEST_ARGS)
