# One entry point for a fresh machine: every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Debian packages: test needs a browser and a Docker engine; bench needs nginx and wrk.
TEST_APT  := chromium chromium-driver docker.io debootstrap
BENCH_APT := nginx wrk

PYTEST_ARGS ?=

.PHONY: help install run test lint bench experiments clean

help:
	@echo "make run          start the load balancer on :5000 with 3 local replicas (logs the URLs of /dashboard, /vote, /docs)"
	@echo "make test         install everything, then lint + type-check + the whole test suite"
	@echo "make bench        proxy throughput vs nginx and a direct call -> bench/results.md"
	@echo "make experiments  experiments A-1..A-4 -> experiments/REPORT.md"
	@echo "make docker-up / docker-down   the stack in containers (docker compose)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,experiments]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m app

lint: $(STAMP)
	$(BIN)/ruff check app replica_service experiments bench tests
	$(BIN)/mypy app replica_service experiments bench tests

test: $(STAMP)
	scripts/apt-install.sh $(TEST_APT)
	$(MAKE) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	scripts/apt-install.sh $(BENCH_APT)
	$(BIN)/python -m bench.proxy_bench

experiments: $(STAMP)
	$(BIN)/python -m experiments.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output

-include mk/docker.mk
