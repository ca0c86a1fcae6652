# Everything a fresh clone needs: `make serve`, `make test` (and `make bench`, `make quality`).
PYTHON ?= python3
VENV ?= .venv
LINTED := $(wildcard service trainer tests benchmarks)
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
TCPDUMP := /usr/bin/tcpdump
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A Debian package; the package lists are refreshed only if the first try fails.
APT_INSTALL = DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(1) \
  || ($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(1))

.PHONY: install serve test test-fast lint bench quality load clean

# The runtime dependencies only: what `make serve` needs.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pinned so pip takes the CPU wheel on disk instead of a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME)

# The dev extras on top: test, lint and benchmark tools.
$(STAMP): $(RUNTIME)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The service on http://127.0.0.1:8000 with the embedded SQLite database ./regtune.db;
# `make serve PORT=8765` for another port. `exec`: the server replaces the recipe's shell, so
# the SIGTERM that make passes on when it is stopped reaches the server itself.
PORT ?=
serve: $(RUNTIME)
	exec $(VENV)/bin/regtune serve $(if $(PORT),--port $(PORT))

# The browser tests drive Debian's Chromium (Playwright's own browser download does not work
# on a closed network).
$(CHROMIUM):
	$(call APT_INSTALL,chromium)

# The load benchmark times requests on the wire too (tcpdump, run as root).
$(TCPDUMP):
	$(call APT_INSTALL,tcpdump)

test: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy trainer service
	$(PY) -m pytest -q

# A representative subset in a few minutes: everything but the tests marked slow (real
# processes over time: faults, many workers, browsers, the GPU dry run).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(PY) -m pytest -q -m "not slow"

# ruff, then mypy (strict on trainer/, settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy trainer service

# The reference workload as users run it (Optuna's multi-process form, `regtune tune`,
# `regtune serve`, the textbook loop), then engine throughput side by side (textbook loop,
# per-trial engine, population engine) for the MLP, the compute-bound image MLP, a `layers`
# CNN and a plugin network,
# then a real mixed-type table next to a scikit-learn baseline, then how workers are shared
# between tenants (each tenant's share over a minute, the claim time), then trade-off fronts
# (width and L1 against accuracy) and what stacking trials of different widths costs.
bench: $(STAMP)
	$(PY) benchmarks/workflows.py --append BENCHMARKS.md
	$(PY) benchmarks/engines.py --append BENCHMARKS.md
	$(PY) benchmarks/engines.py --model image-mlp --trials 2 --epochs 2 --engines 'textbook,population P=2,population P=1 ×2 processes' --append BENCHMARKS.md
	$(PY) benchmarks/engines.py --model layers-cnn --trials 4 --epochs 5 --threads 1 --append BENCHMARKS.md
	$(PY) benchmarks/engines.py --model plugin --trials 4 --epochs 5 --threads 1 --append BENCHMARKS.md
	$(PY) benchmarks/tables.py --append BENCHMARKS.md
	$(PY) benchmarks/fair_share.py --append BENCHMARKS.md
	$(PY) benchmarks/trade_offs.py --threads 1 --append BENCHMARKS.md

# Search quality on the built-in datasets, and whether the rest of the toolbox (augmentation,
# max-norm) helps against the same budget without it (long: tens of minutes on 2 cores).
quality: $(STAMP)
	$(PY) benchmarks/quality.py --append BENCHMARKS.md
	$(PY) benchmarks/toolbox.py --append BENCHMARKS.md

# 200 pollers against `regtune serve` while two workers train (issue 5); the first run fills
# a 10,000-trial database at LOAD_SEED (minutes), later runs copy it.
LOAD_SEED ?= /tmp/regtune-load-seed.db
load: $(STAMP) $(TCPDUMP)
	$(PY) benchmarks/load_status.py --seeded $(LOAD_SEED) --capture --append BENCHMARKS.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
