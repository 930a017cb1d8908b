# monitoringserver — the two commands are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
UV := $(PY) -m uv
UV_BOOT := .venv-uv
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := --extra server --extra dev
HTTP_LISTEN ?= 127.0.0.1:9940
GRPC_LISTEN ?= 127.0.0.1:9941
DATA_DIR ?= ./data
PYTEST_WORKERS ?= auto

.PHONY: run test check fmt bench env system-deps lock clean proto

## env: create .venv from uv.lock (quick when nothing changed)
env: $(VENV)/.synced

# scripts/bootstrap-uv.sh finds or installs uv (pip, a bootstrap venv in $(UV_BOOT), or
# Debian's python3-pip/python3-venv when root) and prints how to run it.
$(VENV)/.synced: pyproject.toml uv.lock
	@uv="$$(bash scripts/bootstrap-uv.sh $(PY) $(UV_BOOT))" || exit 1; \
	echo "$$uv sync --frozen $(EXTRAS) --python $(PY)"; $$uv sync --frozen $(EXTRAS) --python $(PY)
	@touch $@

## run: start the server with a local agent on the embedded store
run: env
	$(BIN)/monitoring-server serve --data-dir $(DATA_DIR) --http-listen $(HTTP_LISTEN) --grpc-listen $(GRPC_LISTEN)

## system-deps: Debian packages the tests start for real (only when root and missing)
system-deps:
	@bash scripts/install-system-deps.sh

## test: install what the tests need, then the whole gate
test: env system-deps
	$(MAKE) check

## check: format, lint, types, layer contracts, the whole test suite with coverage
check: env
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -W error -n $(PYTEST_WORKERS) --cov --cov-report=term --cov-fail-under=85 -p no:cacheprovider

fmt: env
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## bench: benchmarks (not tests); results as JSON in bench/results/
bench: env
	$(BIN)/python -m bench.run_all

## proto: regenerate the gRPC modules from src/monitoringserver/proto/monitoring.proto
proto: env
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --grpc_python_out=src --pyi_out=src monitoringserver/proto/monitoring.proto

lock:
	$(UV) lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .coverage* htmlcov
