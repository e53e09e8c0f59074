# One entry point for a fresh machine: every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp

# Debian packages: test needs a browser, a Docker engine and PostgreSQL; bench needs nginx, wrk and h2load.
TEST_APT  := chromium chromium-driver docker.io debootstrap postgresql
BENCH_APT := nginx wrk nghttp2-client

PYTEST_ARGS ?=

# Where `make bench` and `make experiments` write (ignored by git). The committed bench/results.md and
# experiments/REPORT.md (+ figures) change only through the *-report targets.
BENCH_OUT       := bench/out
EXPERIMENTS_OUT := experiments/results

.PHONY: help install native run test lint bench bench-report experiments experiments-report clean

help:
	@echo "make run                 start the load balancer on :5000 with 3 local replicas (Ctrl-C stops it);"
	@echo "                         it logs where to look: /dashboard, /vote, /docs"
	@echo "make test                install everything, then lint + type-check + the whole test suite"
	@echo "make lint                ruff + mypy only"
	@echo "make install             the virtualenv (.venv) with every dependency (make run installs only its own)"
	@echo "make native              compile the hot path with mypyc into build/native (~45 s; test and bench do it;"
	@echo "                         the next make run uses it; a no-op when up to date)"
	@echo "make bench               proxy throughput vs nginx and a direct call -> $(BENCH_OUT)/results.md;"
	@echo "                         the data plane's Python per request, no sockets -> $(BENCH_OUT)/dataplane.md"
	@echo "make bench-report        the same, refreshing the committed bench/results.md"
	@echo "make experiments         experiments A-1..A-5 -> $(EXPERIMENTS_OUT)/REPORT.md"
	@echo "make experiments-report  the same, refreshing the committed experiments/REPORT.md and figures"
	@echo "make docker-engine       start a Docker engine if one is installed but stopped"
	@echo "make docker-base         print (and build if needed) the base image the Dockerfiles use"
	@echo "make docker-images       build the LB and replica images (docker compose build)"
	@echo "make docker-up           the stack in containers (docker compose up), waits until /readyz answers"
	@echo "make docker-down         docker compose down, and check that nothing is left"
	@echo "make swarm-up            two LB instances + votes-db on Docker Swarm (docker-stack.yml), waits for /readyz"
	@echo "                         on :5000 and :5001; admin token in .swarm-secrets/admin-token (SWARM_ADMIN_TOKEN=...)"
	@echo "make swarm-down          remove that stack and its replicas (keeps the votes' volume chlb_votes-db-data);"
	@echo "                         leave the swarm if swarm-up made it"
	@echo "make clean               remove .venv, caches, outputs and the project's Docker config folder"

# Two installs: running needs the package only (a first `make run` is quick); tests, the compiled hot
# path, benchmarks and experiments need the dev and experiments extras too.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile -e .
	touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,experiments]'
	touch $@

install: $(STAMP)

# Compiles only when a hot-path source changed since the last build (app/native.py checks the same digests).
native: $(STAMP)
	@$(BIN)/python -c 'import os, shutil, sys, sysconfig; \
	  sys.exit(not (shutil.which("cc") and os.path.isfile(sysconfig.get_paths()["include"] + "/Python.h")))' \
	  || scripts/apt-install.sh gcc python3-dev
	$(BIN)/python scripts/build_native.py

# exec: Ctrl-C reaches the LB directly; it stops its replicas and exits 0, so make reports no error.
# No compile step: the LB runs the compiled hot path when `make native` has built it, else the source.
run: $(RUN_STAMP)
	exec $(BIN)/python -m app

lint: $(STAMP)
	$(BIN)/ruff check app replica_service experiments bench tests scripts
	$(BIN)/mypy app replica_service experiments bench tests scripts

test: native
	scripts/apt-install.sh $(TEST_APT)
	$(MAKE) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: native
	scripts/apt-install.sh $(BENCH_APT)
	$(BIN)/python -m bench.proxy_bench --out $(BENCH_OUT)/results.md
	$(BIN)/python -m bench.tls_bench --out $(BENCH_OUT)/tls.md
	$(BIN)/python -m bench.dataplane_bench --out $(BENCH_OUT)/dataplane.md

bench-report: native
	scripts/apt-install.sh $(BENCH_APT)
	$(BIN)/python -m bench.proxy_bench --out bench/results.md

experiments: native
	$(BIN)/python -m experiments.run_all --out $(EXPERIMENTS_OUT)

experiments-report: native
	$(BIN)/python -m experiments.run_all --out $(EXPERIMENTS_OUT) --report experiments/REPORT.md \
	  --figures experiments/figures

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache test-output .docker $(BENCH_OUT) $(EXPERIMENTS_OUT)

-include mk/docker.mk
-include mk/swarm.mk
