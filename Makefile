# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast check lint bench bench-peers clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[proxy,dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: the proxy on :8080/:9070 with the order-fulfilment example handler on :9080
## (`make run APP=examples.all:application` serves every example).
run: install
	PY=$(PY) APP=$(APP) bash scripts/run.sh

## Every test: unit, component, end-to-end (real processes, SIGKILL), acceptance, browser, container.
test: install
	bash scripts/system_deps.sh
	$(PY) -m pytest -q -p no:cacheprovider

## Unit and component tests only.
test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/component

## ruff (lint and format) and mypy --strict; CI runs this before the tests.
lint: install
	$(PY) -m ruff check proxy handlers_sdk durable_core examples tests bench
	$(PY) -m ruff format --check proxy handlers_sdk durable_core examples tests bench
	$(PY) -m mypy

check: lint test

## The benchmark (prints one table); `make bench SIZE=tiny` for a quick run.
bench: install
	$(PY) -m bench $(if $(SIZE),--size $(SIZE),)

## The benchmark with Restate and DBOS measured in the same run (installs them under ~/.cache/durable-proxy-bench).
bench-peers: install
	$(PY) -m bench --size full --peers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
