# replayml: `make run` then `make test` on a fresh clone. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION ?= 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
UI_PORT ?= 5000
ARGS ?=

# Keep DVC's hash cache inside the project, MLflow telemetry off, uv on this interpreter.
export DVC_SITE_CACHE_DIR ?= $(CURDIR)/.dvc/tmp/site-cache
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install data run test bench ui params lint clean clean-store

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sed 's/$$(UI_PORT)/$(UI_PORT)/g' \
		| awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-11s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install -q "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed ## Create .venv from the committed lock file (uv sync --frozen)

data: install ## Restore the default dataset (dvc pull) or regenerate it and check its hash
	$(VENV)/bin/replayml data prepare

run: data ## Install, prepare data, train the default model, print the MLflow run link
	$(PY) train.py $(ARGS)

test: install ## Run the test suite (end-to-end tests included)
	$(PY) -m pytest -q $(ARGS)

bench: data ## Benchmarks against hand-written baselines (prints tables)
	$(PY) benchmarks/run_all.py $(ARGS)

ui: install ## MLflow UI on 127.0.0.1:$(UI_PORT) over the project's store
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false PYTHONWARNINGS="ignore:starlette.middleware.wsgi is deprecated" \
		$(VENV)/bin/mlflow server --host 127.0.0.1 --port $(UI_PORT) --workers 1 \
		--backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root file://$(CURDIR)/mlruns/artifacts

params: install ## Regenerate params.yaml from conf/
	$(VENV)/bin/replayml params > params.yaml

lint: install ## ruff format check and lint
	$(VENV)/bin/ruff format --check src tests benchmarks train.py
	$(VENV)/bin/ruff check src tests benchmarks train.py

clean: ## Remove Hydra's run folders (keeps the MLflow store, data and the DVC cache)
	rm -rf outputs multirun
	@if [ -d mlruns ]; then echo "kept mlruns/ (every run, model version and alias); make clean-store CONFIRM=mlruns removes it"; fi

clean-store: ## Delete the local MLflow store: every run and registered model (CONFIRM=mlruns)
	@if [ "$(CONFIRM)" != "mlruns" ]; then \
		echo "error: this deletes every run, registered model and alias in mlruns/, which no replay can bring back; run make clean-store CONFIRM=mlruns to go ahead" >&2; \
		exit 2; \
	fi
	rm -rf mlruns
