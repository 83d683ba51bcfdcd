# Everything a developer or CI types. Each target sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SEEDS ?= 20000
RUNS ?= 1
DURATION ?= 60
SEED ?=
WORKLOAD ?= kv
FSM ?= kv
CONFIG ?= conf/cluster.yaml
TRIAL_JOBS ?= 2
FUZZ_REQUESTS ?= 100000
FUZZ_SEED ?= 1
TARGET ?=

.PHONY: all venv test browser lint simulate bench run certs faults fuzz mutate clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) browser
	$(BIN)/trial -j $(TRIAL_JOBS) tests benchmarks.tests

# The console's browser test (tests/process/test_console.py) drives Debian's chromium headless:
# installed here when missing and possible (root with apt-get); otherwise that test skips and
# says why.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "chromium could not be installed: tests/process/test_console.py will skip"

# Import rules between layers (core pure, API off storage/transport, no harness in the
# product): tests/layers.py.
lint: $(STAMP)
	$(BIN)/ruff check graft tests benchmarks twisted
	$(BIN)/ruff format --check graft tests benchmarks twisted
	$(BIN)/mypy
	$(BIN)/python -m tests.layers

simulate: $(STAMP)
	$(BIN)/python -m graft.testing.simulation --seeds $(SEEDS)

# `make bench SCENARIOS=growth` runs the 10-minute-per-system growth scenario (not in the
# default set); SYSTEMS=graft,etcd picks systems; BENCH_ARGS passes any other option.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(SCENARIOS),--scenarios $(SCENARIOS)) \
	  $(if $(SYSTEMS),--systems $(SYSTEMS)) $(BENCH_ARGS)

# Real processes in a network namespace with partitions, kills, pauses and netem; needs root.
# WORKLOAD=lock runs examples/lock.py in three processes and checks its fencing tokens.
# FSM=sqlite runs the kv workload in SQL on the SQLite FSM, with frequent delta snapshots.
faults: $(STAMP)
	$(BIN)/python -m graft.testing.faults --runs $(RUNS) --duration $(DURATION) --workload $(WORKLOAD) $(if $(filter-out kv,$(FSM)),--fsm $(FSM)) $(if $(SEED),--seed $(SEED))

# Random HTTP requests against a live 3-node kv and SQLite cluster on 127.0.0.1 (not in CI:
# `make test` runs a few hundred of them); prints status counts, node deaths, replica equality.
fuzz: $(STAMP)
	$(BIN)/python -m graft.testing.fuzz --requests $(FUZZ_REQUESTS) --seed $(FUZZ_SEED)

# Mutation testing of the named functions in conf/mutation.toml (not in CI: 10-30 min), one
# mutant at a time; TARGET=name (space-separated) runs only those targets.
mutate: $(STAMP)
	$(BIN)/python -m graft.testing.mutation $(foreach t,$(TARGET),--target $(t))

certs: $(STAMP)
	$(BIN)/graft certs -c $(CONFIG)

run: $(STAMP)
	$(BIN)/graft certs -c $(CONFIG) --if-missing
	$(BIN)/graft dev -c $(CONFIG)

clean:
	rm -rf $(VENV) _trial_temp* dropin.cache data certs .mutate
