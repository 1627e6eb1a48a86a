# sarflow: `make run` runs the pipeline on the built-in dataset, `make test` runs the tests.
# Both set everything up first (a local virtualenv with pinned dependencies, CPU PyTorch).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# stage commands run `python`: make it the venv's
export PATH := $(abspath $(VENV))/bin:$(PATH)
# a cold machine can take >20 s to start Prefect's temporary server
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS := 1

.PHONY: setup browser run test test-fast lint format repro bench bench-data synthetic search-aware remote dashboard serve clean

PORT       ?= 4200
DVC_REMOTE ?= $(abspath ..)/sarflow-dvc-remote

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	@git rev-parse --git-dir >/dev/null 2>&1 || git init --quiet
	touch $(STAMP)

# Debian's Chromium for the dashboard test (tests/test_server.py) and flows/dashboard_check.py;
# Playwright drives it from the venv and never downloads a browser.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

run: setup            ## generate, validate, split, train and evaluate through the Prefect flow
	$(PY) -m flows.pipeline

repro: setup          ## the same stages through DVC alone
	$(VENV)/bin/dvc repro

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint browser    ## the whole suite (pytest's "no tests ran" exit 5 fails too)
	$(PY) -m pytest -q

test-fast: lint       ## the unit tier for the edit loop (no end-to-end runs; a few minutes)
	$(PY) -m pytest -q -m "not slow"

bench: setup          ## training speed against DeepCTR-Torch and torch-rechub (BENCHMARKS.md)
	$(PY) -m pip install --quiet --no-deps deepctr-torch==0.3.0 torch-rechub==0.9.0
	$(PY) bench/train_speed.py

bench-data: setup     ## validate + split + features at 1M, 5M, 20M actions (BENCHMARKS.md; ~15 min)
	$(PY) bench/data_speed.py

synthetic: setup      ## the MMoE paper's synthetic experiment -> reports/synthetic/ (10 seeds, ~30 min on 2 cores)
	$(PY) -m flows.experiments.synthetic

search-aware: setup   ## SESRec vs its ablations, joint vs per-scenario, over seeds -> reports/search_aware/
	$(PY) -m flows.experiments.search_aware

remote: setup         ## default DVC remote: a local folder outside the repo (DVC_REMOTE=... for any URL)
	$(VENV)/bin/dvc remote add --local --default --force sarflow $(DVC_REMOTE)

dashboard: setup      ## the Prefect server and UI on http://127.0.0.1:$(PORT)
	PREFECT_UI_API_URL=http://127.0.0.1:$(PORT)/api $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PORT)

serve: setup remote   ## the pipeline on its cron schedule (serve.cron), against the dashboard's server
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PORT)/api} $(PY) -m flows.serve

clean:
	rm -rf data artifacts reports/data_docs .dvc/tmp
