# Axon: a Matrix homeserver. `make run` starts the embedded default; `make test` passes the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
RUN_DIR ?= $(CURDIR)/.run
export AXON_RUN_DIR := $(RUN_DIR)

# Test services provisioned by the project's own scripts (see scripts/).
PG_PORT ?= 55432
KAFKA_PORT ?= 59092
export AXON_TEST_POSTGRES ?= postgresql://postgres@127.0.0.1:$(PG_PORT)/axon_test
export AXON_TEST_KAFKA ?= 127.0.0.1:$(KAFKA_PORT)

PYTEST_ARGS ?=

.PHONY: help venv install install-test run test test-unit services services-stop bench bench-events bench-hs bench-cluster bench-federation bench-deps sytest clean validate-deploy \
	cluster cluster-stop cluster-status

help:
	@echo "make run        - run the homeserver (embedded default) on http://127.0.0.1:8008"
	@echo "make test       - install everything, provision PostgreSQL + Kafka, run the tests"
	@echo "make bench      - benchmarks"
	@echo "make sytest     - run SyTest against the embedded server (docs/sytest.md)"
	@echo "make validate-deploy - check Dockerfile/compose/k8s artifacts offline (docs/operations.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[test]'
	touch $@

venv install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(VENV)/bin/axon run --dev

services:
	scripts/postgres.sh start
	scripts/postgres.sh createdb axon_test
	scripts/kafka.sh start

services-stop:
	-scripts/kafka.sh stop
	-scripts/postgres.sh stop

# Cluster mode: one process per service (replica counts below) over Kafka + PostgreSQL,
# nginx router on ROUTER_PORT; services on CLUSTER_BASE_PORT, +1, ... (scripts/cluster.sh).
ROOMSERVERS ?= 1
SYNCAPIS ?= 1
CLIENTAPIS ?= 1
USERAPIS ?= 1
MEDIAAPIS ?= 1
FEDERATIONAPIS ?= 1
ROUTER_PORT ?= 8008
CLUSTER_BASE_PORT ?= 18100
CLUSTER_ENV = ROOMSERVERS=$(ROOMSERVERS) SYNCAPIS=$(SYNCAPIS) CLIENTAPIS=$(CLIENTAPIS) USERAPIS=$(USERAPIS) \
	MEDIAAPIS=$(MEDIAAPIS) FEDERATIONAPIS=$(FEDERATIONAPIS) ROUTER_PORT=$(ROUTER_PORT) \
	BASE_PORT=$(CLUSTER_BASE_PORT) PG_PORT=$(PG_PORT) KAFKA_PORT=$(KAFKA_PORT) PYTHON=$(CURDIR)/$(PY)

cluster: $(VENV)/.installed
	$(CLUSTER_ENV) scripts/cluster.sh start

cluster-stop:
	$(CLUSTER_ENV) scripts/cluster.sh stop

cluster-status:
	$(CLUSTER_ENV) scripts/cluster.sh status

# The Axon<->Synapse federation interop test (a real Synapse over loopback TLS) runs in CI.
test: install-test services
	AXON_SYNAPSE_INTEROP=$${AXON_SYNAPSE_INTEROP-1} $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Deploy artifacts, offline: route-table files current, dclint on deploy/compose.yaml,
# deploy/k8s rendered and validated (kubernetes-validate). `make test` runs the same
# checks through tests/deploy.
validate-deploy: install-test
	scripts/validate-deploy.sh

# Pure tests only: no PostgreSQL, no Kafka.
test-unit: install-test
	$(PY) -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

bench-events: install-test
	$(PY) -m bench.events

# Synapse for the side-by-side homeserver bench, in its own venv (never the project's).
SYNAPSE_VERSION ?= 1.163.2
SYNAPSE_VENV := $(RUN_DIR)/bench/synapse-venv
BENCH_HS_ARGS ?=

# psycopg2-binary: bench-cluster runs Synapse on PostgreSQL.
$(SYNAPSE_VENV)/.installed-$(SYNAPSE_VERSION)-pg:
	$(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/pip install -q 'matrix-synapse==$(SYNAPSE_VERSION)' 'psycopg2-binary>=2.9'
	touch $@

bench-deps: install-test $(SYNAPSE_VENV)/.installed-$(SYNAPSE_VERSION)-pg

# Axon (embedded) and Synapse (SQLite) through the Client-Server API; table + .run/bench/hs.json.
bench-hs: bench-deps
	$(PY) -m bench.hs --synapse-venv $(SYNAPSE_VENV) --out $(RUN_DIR)/bench/hs.json $(BENCH_HS_ARGS)

# Axon as a cluster (own processes, replicas, Kafka, PostgreSQL, nginx; 1x1 then 2x2 roomservers x syncapis)
# and Synapse on PostgreSQL through the Client-Server API; table + .run/bench/cluster.json.
BENCH_CLUSTER_ARGS ?=
bench-cluster: bench-deps services
	$(PY) -m bench.cluster --synapse-venv $(SYNAPSE_VENV) --pg postgresql://postgres@127.0.0.1:$(PG_PORT)/postgres \
		--kafka 127.0.0.1:$(KAFKA_PORT) --out $(RUN_DIR)/bench/cluster.json $(BENCH_CLUSTER_ARGS)

# Federation: inbound /send, outbound fan-out to 10 servers, joining a 10,000-member remote room
# (Axon in child processes, fake remote servers over loopback TLS); table + .run/bench/federation.json.
BENCH_FEDERATION_ARGS ?=
bench-federation: install-test
	$(PY) -m bench.federation --out $(RUN_DIR)/bench/federation.json $(BENCH_FEDERATION_ARGS)

bench: bench-events bench-hs bench-cluster bench-federation

# SyTest conformance (docs/sytest.md). SYTEST_ARGS: out dir then quoted test globs.
SYTEST_ARGS ?= $(RUN_DIR)/sytest
sytest: $(VENV)/.installed
	scripts/sytest.sh $(SYTEST_ARGS)

clean:
	rm -rf $(VENV) $(RUN_DIR)
