# One command surface for users, CI and developers. `make help` lists targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
STATE ?= .state
CONFIG ?= configs/demo.yaml
ARGS ?=
PY := $(VENV)/bin/python
PREFECT_PORT ?= 4200
S3_PORT ?= 8333
SERVE_PORT ?= 8000
SERVE_CONFIG ?= configs/serving/demo.yaml

# Local stack environment for the embedded default (no secrets here: the S3 key lives in $(STATE)/stack).
export PREFECT_HOME := $(abspath $(STATE))/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help venv runtime-venv run serve stack-up stack-down stack-status test test-fast lint format typecheck bench clean

help:
	@echo "make run          set up the venv, start the local stack, run train_to_deploy on $(CONFIG)"
	@echo "make test         set up the venv and run the test suite (what CI runs)"
	@echo "make serve        serve the demo model on 127.0.0.1:$(SERVE_PORT), following its production channel"
	@echo "make stack-up     start SeaweedFS S3 (127.0.0.1:$(S3_PORT)) and Prefect server (127.0.0.1:$(PREFECT_PORT))"
	@echo "make stack-down   stop them (data stays in $(STATE)/)"
	@echo "make lint         ruff check + format check; make typecheck: mypy"

venv: $(VENV)/.installed
runtime-venv: $(VENV)/.installed-runtime

# Re-installs when pyproject.toml changes. torch==2.13.0 is pinned (CPU wheel here); see README for GPU.
# `make run` and `make serve` need the pipeline and the server only; the test and lint tools come on top
# for `make test` (~30 s of the first `make run` saved on the 2-core machine).
$(VENV)/.installed-runtime: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[pipeline,serve]'
	touch $@

$(VENV)/.installed: $(VENV)/.installed-runtime
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

stack-up: runtime-venv
	$(PY) -m infra.localstack up --state-dir $(STATE)/stack --s3-port $(S3_PORT) --prefect-port $(PREFECT_PORT)

stack-down: runtime-venv
	$(PY) -m infra.localstack down --state-dir $(STATE)/stack

stack-status: runtime-venv
	$(PY) -m infra.localstack status --state-dir $(STATE)/stack

# The run talks to the stack's Prefect server unless PREFECT_API_URL already names another one.
run: stack-up
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} \
		$(VENV)/bin/int8-pipeline run --config $(CONFIG) $(ARGS)

# The hot-swap server for the embedded default: follows the channel `make run` publishes to.
serve: stack-up
	$(VENV)/bin/int8-serve --config $(SERVE_CONFIG) --port $(SERVE_PORT)

test: venv
	$(PY) -m pytest $(ARGS)

test-fast: venv
	$(PY) -m pytest -m "not e2e" $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/python -m infra.tensorrt_stubs --out .state/tensorrt-stubs >/dev/null
	MYPYPATH=.state/tensorrt-stubs/stubs $(VENV)/bin/mypy

clean:
	rm -rf $(STATE)/runs
