# ordermesh: the single entry point. `make run` and `make test` work on a fresh
# machine that has Python 3.11+, the package registries and PostgreSQL.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
CONTRACTS_OUT := libs/contracts/src
# protos/google holds googleapis' status.proto, imported only: its code comes with googleapis-common-protos.
PROTO_FILES = $(shell find protos/ordermesh -name '*.proto' | sort)
# buf breaking compares against main; CI clones carry main, so this is always there.
BREAKING_AGAINST ?= .git\#branch=main

.PHONY: help install run test test-unit test-integration test-e2e lint proto proto-check bench bench-soak chaos clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

# The Helm chart and image tooling: k8s-tools, k8s-check, k8s-test.
include k8s/k8s.mk

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# Compiled once here: where PYTHONDONTWRITEBYTECODE is set (in the image, and on the
# 2-core machines docs/performance.md measures on) no process writes a .pyc, and each one
# compiled every module it imported from source, about 3 s of CPU per service started.
# The workspace's own packages are editable, so uv leaves their sources alone; a file
# edited since is compiled in memory as before.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --all-packages --frozen --compile-bytecode
	$(VENV)/bin/python -m compileall -q -j 0 libs services
	@touch $@

install: $(VENV)/.synced ## create .venv with every package of the workspace

run: install ## the whole mesh on its embedded defaults (SQLite + a local broker), orders flowing
	$(VENV)/bin/ordermesh up

# Two workers, a test file each at a time: most tests wait on servers, so two share the
# 2 cores well. The tests marked serial (they restart the shared PostgreSQL, or count its
# connections) run alone.
PYTEST_PARALLEL = -n 2 --dist loadfile

test: install k8s-tools ## unit, integration, end-to-end and chart tests, then the linters
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not serial"
	$(PY) -m pytest -q -m serial
	$(MAKE) --no-print-directory lint

test-unit: install
	$(PY) -m pytest -q tests/unit

test-integration: install
	$(PY) -m pytest -q tests/integration

test-e2e: install
	$(PY) -m pytest -q tests/e2e

lint: install proto-check k8s-check ## ruff, mypy, buf lint, buf breaking, stub drift, chart
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs services tests
	$(VENV)/bin/buf lint
	@if git rev-parse --verify --quiet main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		echo "buf breaking against main"; $(VENV)/bin/buf breaking --against '$(BREAKING_AGAINST)'; \
	else echo "buf breaking: main has no contracts yet, nothing to compare"; fi

# Generated stubs are committed so a caller can install libs/contracts alone.
proto: install ## regenerate the typed stubs (and the documented descriptors) from protos/
	rm -rf $(CONTRACTS_OUT)/ordermesh
	$(MAKE) --no-print-directory _protoc OUT=$(CONTRACTS_OUT)

# descriptors.binpb: the contracts with their comments (source info), which reflection
# serves so that `grpcurl describe` shows the API documentation.
_protoc:
	mkdir -p $(OUT)/ordermesh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
		--python_out=$(OUT) --grpc_python_out=$(OUT) \
		--mypy_out=quiet:$(OUT) --mypy_grpc_out=quiet:$(OUT) \
		--include_source_info --descriptor_set_out=$(OUT)/ordermesh/descriptors.binpb \
		$(PROTO_FILES)
	for d in $$(find $(OUT)/ordermesh -mindepth 1 -type d); do touch $$d/py.typed; done

proto-check: install ## fail when the committed stubs differ from what the protos generate
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(MAKE) --no-print-directory _protoc OUT=$$tmp >/dev/null && \
	diff -r -x __pycache__ $$tmp/ordermesh $(CONTRACTS_OUT)/ordermesh && echo "stubs match protos"

bench: install ## PlaceOrder against its baselines, under 5 minutes: bench/results/latest.{json,png}
	$(VENV)/bin/ordermesh bench

chaos: install ## 5000 orders under kills, a broker outage, a PostgreSQL restart, a bad provider
	$(VENV)/bin/ordermesh chaos

ORDERS ?= 1000000
MAX_MINUTES ?= 0
bench-soak: install ## a long wait_for_outcome=false run: memory, backlog, invariants (ORDERS=n, MAX_MINUTES=m)
	$(VENV)/bin/ordermesh soak --orders $(ORDERS) --max-minutes $(MAX_MINUTES)

clean: ## remove local state and caches (keeps .venv)
	rm -rf .ordermesh .pytest_cache .mypy_cache .ruff_cache
