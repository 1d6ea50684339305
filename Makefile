# Two commands do all the set-up on a fresh machine: `make run` and `make test`; `make` alone (or
# `make help`) lists the targets. A `## ` comment above a target is its line in `make help`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast check lint bench bench-peers bench-stores clean

## List the targets (the default goal: plain `make` prints this).
help:
	@awk '/^## /{doc[n++] = substr($$0, 4); next} \
	  /^[a-zA-Z][a-zA-Z_-]*:/ && n {split($$0, t, ":"); printf "  make %-12s %s\n", t[1], doc[0]; \
	    for (i = 1; i < n; i++) printf "  %-17s %s\n", "", doc[i]} {n = 0}' $(firstword $(MAKEFILE_LIST))

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[proxy,dev]'
	touch $(STAMP)

## Create .venv and install the package with the proxy and dev extras (the other targets do it first).
install: $(STAMP)

## The main job: the proxy on :8080/:9070 with the order-fulfilment example handler on :9080.
## APP=examples.all:application serves every example; HANDLER_PORT=9081 moves the handler;
## PROXY_* variables set any proxy flag (make run PROXY_INGRESS_PORT=8081 PROXY_RETENTION=5s);
## ARGS='--retention 5s --log-format text' passes flags of `python -m proxy`.
run: install
	PY=$(PY) APP=$(APP) bash scripts/run.sh $(ARGS)

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

## lint, then test (what CI runs).
check: lint test

## The benchmark (prints one table); `make bench SIZE=tiny` for a quick run.
bench: install
	$(PY) -m bench $(if $(SIZE),--size $(SIZE),)

## The benchmark with Restate and DBOS measured in the same run (installs them under ~/.cache/durable-proxy-bench).
bench-peers: install
	$(PY) -m bench --size full --peers

## LMDB x1 vs PostgreSQL x1/x2/x3 and a failover time (a private PostgreSQL cluster; issue 12).
## `make bench-stores SIZE=tiny LEASE=2` for a quick run.
bench-stores: install
	$(PY) -m bench --stores --size $(or $(SIZE),full) $(if $(LEASE),--lease-time $(LEASE),)

## Remove .venv and the tool caches (./data, the proxy's LMDB data, is kept).
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
