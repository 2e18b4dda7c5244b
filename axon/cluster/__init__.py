"""Cluster mode: every service its own process (with replicas) over Kafka and PostgreSQL.

`services.build_service(name, cfg)` composes one service; `run.serve_service` serves it
(`axon run-service NAME --config FILE`); `routes` derives the public route table from
the services' routers and renders the nginx router config; `scripts/cluster.sh`
provisions and starts the whole thing (`make cluster`).
"""
