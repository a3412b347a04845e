# Raftka: two commands matter: `make run` (a local cluster) and `make test` (everything CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SEEDS ?= 1000
CHAOS_RUNS ?= 10
CHAOS_SEED ?= 1
CHAOS_DURATION ?= 60

.PHONY: test run lint typecheck pytest sim bench chaos clean deps

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh
	touch $(STAMP)

deps: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check broker client raft storage tools bench tests

typecheck: $(STAMP)
	$(BIN)/mypy broker client raft storage

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: $(STAMP)
	$(MAKE) lint
	$(MAKE) typecheck
	$(MAKE) pytest

run: $(STAMP)
	$(BIN)/python -m broker run-local

sim: $(STAMP)
	$(BIN)/python -m tests.raft.sim --seeds $(SEEDS)

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --runs $(CHAOS_RUNS) --seed $(CHAOS_SEED) --duration $(CHAOS_DURATION) --nemesis-sets "kill;pause;partition;slow,lossy;kill,pause,partition,slow,lossy"

# The whole run takes about 25 minutes on 2 cores and writes bench/RESULTS.md; run it on a
# quiet machine. `make bench BENCH_ARGS=--quick` tries the machinery in a few minutes
# (results to /tmp); BENCH_ARGS="--only node,cluster" runs some modules.
bench: $(STAMP)
	bash tools/install_peers.sh || echo "bench: peers not installed; bench.peers reports why"
	$(BIN)/python -m bench.all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
