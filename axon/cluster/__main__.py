"""Helpers for scripts/cluster.sh: `python -m axon.cluster <command>`.

  gen-config  write the cluster config (YAML), the signing key and the process plan
  init        create the topics (explicit partitions, retention) and every schema
  nginx       render the router config from the services' route table
  wait-ready  until every process of the plan answers /ready with 200
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time

import yaml

from libs.config.loader import config_to_dict, dev_config, load_config, load_or_create_signing_key
from libs.config.model import HomeserverConfig
from libs.log.api import TopicSpec

from .services import SERVICES

DAY_MS = 24 * 3600 * 1000
# (topic, partitions, retention_ms). Partition counts match what the services ask
# for; retention: durable topics a week, ephemeral ones short.
TOPICS: list[tuple[str, int, int]] = [
    ("roomserver.input", 8, 7 * DAY_MS),
    ("roomserver.output", 8, 7 * DAY_MS),
    ("ephemeral.typing", 8, 3600 * 1000),
    ("ephemeral.receipts", 8, 7 * DAY_MS),
    ("user.to_device", 8, 7 * DAY_MS),
    ("user.client_data", 8, 7 * DAY_MS),
    ("user.key_changes", 8, 7 * DAY_MS),
    ("user.presence", 8, 7 * DAY_MS),
    ("replies", 8, 60 * 1000),
]
MIGRATIONS = {
    "roomserver": "services.roomserver.storage.migrations",
    "userapi": "services.userapi.storage.migrations",
    "syncapi": "services.syncapi.storage.migrations",
    "mediaapi": "services.mediaapi.storage.migrations",
    "federationapi": "services.federationapi.storage.migrations",
    "appservice": "services.appservice.storage.migrations",
}


def read_plan(path: str) -> list[tuple[str, int]]:
    """The plan: one `service port` line per process."""
    out: list[tuple[str, int]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                name, port = line.split()
                out.append((name, int(port)))
    return out


def cluster_config(*, run_dir: str, server_name: str, router_port: int, plan: list[tuple[str, int]],
                   postgres_dsn: str, kafka_bootstrap: str, schema_prefix: str, topic_prefix: str,
                   bcrypt_rounds: int, secret: str, app_service_config_files: list[str] | None = None,
                   federation: bool = False) -> HomeserverConfig:
    """The `make run` development defaults, on PostgreSQL + Kafka, one URL per replica."""
    cfg = dev_config(os.path.join(run_dir, "data"))
    cfg.server_name = server_name
    cfg.public_baseurl = f"http://{server_name}/"
    cfg.listen.port = router_port
    cfg.database.kind = "postgres"
    cfg.database.postgres_dsn = postgres_dsn
    cfg.database.postgres_schema_prefix = schema_prefix
    cfg.log.kind = "kafka"
    cfg.log.kafka_bootstrap = kafka_bootstrap
    cfg.log.kafka_topic_prefix = topic_prefix
    cfg.logging.format = "json"
    cfg.cluster.internal_secret = secret
    cfg.registration.bcrypt_rounds = bcrypt_rounds
    cfg.app_service_config_files = list(app_service_config_files or [])
    # Federation on loopback (tests, a trial): the routes on, private addresses allowed.
    cfg.federation.enabled = federation
    for name in SERVICES:
        setattr(cfg.cluster, name, [f"http://127.0.0.1:{p}" for n, p in plan if n == name])
    return cfg


def cmd_gen_config(a: argparse.Namespace) -> int:
    counts = {name: 1 for name in SERVICES}
    for item in filter(None, a.replicas.split(",")):
        name, _, n = item.partition("=")
        if name not in counts or not n.isdigit():
            print(f"bad replica count {item!r}", file=sys.stderr)
            return 2
        counts[name] = int(n)
    plan: list[tuple[str, int]] = []
    port = a.base_port
    for name in SERVICES:
        for _ in range(counts[name]):
            plan.append((name, port))
            port += 1
    cfg = cluster_config(run_dir=a.run_dir, server_name=a.server_name, router_port=a.router_port, plan=plan,
                         postgres_dsn=a.postgres, kafka_bootstrap=a.kafka, schema_prefix=a.schema_prefix,
                         topic_prefix=a.topic_prefix, bcrypt_rounds=a.bcrypt_rounds,
                         secret=secrets.token_urlsafe(24),
                         app_service_config_files=[os.path.abspath(p) for p in a.app_service_config],
                         federation=a.federation)
    if a.federation_loopback:
        fed = cfg.federation
        fed.block_private_addresses, fed.verify_tls, fed.trusted_key_servers = False, False, []
        fed.retry_initial_backoff_s, fed.retry_max_backoff_s = 0.5, 5.0
    os.makedirs(cfg.data_dir, exist_ok=True)
    os.makedirs(cfg.media.store_path, exist_ok=True)
    load_or_create_signing_key(cfg.signing_key_path)  # before the replicas race to create it
    fd = os.open(os.path.join(a.run_dir, "config.yaml"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
    with open(os.path.join(a.run_dir, "plan"), "w", encoding="utf-8") as f:
        f.writelines(f"{n} {p}\n" for n, p in plan)
    return 0


async def _init(cfg: HomeserverConfig) -> None:
    from axon.embedded import log_adapter_config
    from libs.log import open_log
    from libs.storage import open_database

    log = open_log(log_adapter_config(cfg))
    await log.start()
    try:
        await log.ensure_topics([TopicSpec(n, p, r) for n, p, r in TOPICS])
    finally:
        await log.stop()
    for name, pkg in MIGRATIONS.items():
        db = await open_database(cfg.database, name, pkg)
        await db.close()


def cmd_init(a: argparse.Namespace) -> int:
    asyncio.run(_init(load_config(a.config)))
    return 0


def cmd_nginx(a: argparse.Namespace) -> int:
    from .routes import nginx_config, service_routes

    cfg = load_config(a.config)
    plan = read_plan(a.plan)
    upstreams: dict[str, list[str]] = {}
    for name, port in plan:
        upstreams.setdefault(name, []).append(f"127.0.0.1:{port}")
    table = asyncio.run(service_routes())
    tls = None
    if a.tls_port:
        if not a.tls_cert or not a.tls_key:
            print("--tls-port needs --tls-cert and --tls-key", file=sys.stderr)
            return 2
        tls = (f"{a.tls_host}:{a.tls_port}", os.path.abspath(a.tls_cert), os.path.abspath(a.tls_key))
    text = nginx_config(table, upstreams, listen=f"127.0.0.1:{a.listen_port}", run_dir=a.run_dir,
                        max_body_bytes=cfg.media.max_upload_bytes + 1024 * 1024, tls=tls)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


def _dead_processes(pids_file: str) -> list[list[str]]:
    """Lines of the PID file ("pid what name port") whose process is gone."""
    dead = []
    with open(pids_file, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts and not os.path.exists(f"/proc/{parts[0]}"):
                dead.append(parts)
    return dead


def _report_dead(pids_file: str, dead: list[list[str]]) -> None:
    """Name each process that died and show the end of its log, so a failed start says why."""
    logs = os.path.join(os.path.dirname(os.path.abspath(pids_file)), "logs")
    for parts in dead:
        pid, what, name, port = (parts + ["?"] * 4)[:4]
        print(f"a process exited during start-up: {name} port {port} (pid {pid}, {what})", file=sys.stderr)
        candidates = ["nginx.log", "nginx-error.log"] if what == "nginx" else [f"{name}-{port}.log"]
        for fname in candidates:
            path = os.path.join(logs, fname)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    tail = f.readlines()[-40:]
            except OSError:
                continue
            print(f"--- last lines of {path} ---", file=sys.stderr)
            sys.stderr.write("".join(tail))


def cmd_wait_ready(a: argparse.Namespace) -> int:
    import httpx

    targets = [f"http://127.0.0.1:{p}/ready" for _, p in read_plan(a.plan)]
    targets += [f"http://127.0.0.1:{p}/ready" for p in a.extra_port]
    deadline = time.monotonic() + a.timeout
    pending = list(targets)
    while pending and time.monotonic() < deadline:
        dead = _dead_processes(a.pids) if a.pids else []
        if dead:
            _report_dead(a.pids, dead)
            return 1
        still = []
        for url in pending:
            try:
                ok = httpx.get(url, timeout=3).status_code == 200
            except httpx.HTTPError:
                ok = False
            if not ok:
                still.append(url)
        pending = still
        if pending:
            time.sleep(0.5)
    if pending:
        print("not ready: " + " ".join(pending), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m axon.cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen-config")
    g.add_argument("--run-dir", required=True)
    g.add_argument("--server-name", default="localhost:8008")
    g.add_argument("--router-port", type=int, default=8008)
    g.add_argument("--base-port", type=int, default=18100)
    g.add_argument("--replicas", default="", help="e.g. roomserver=2,syncapi=2")
    g.add_argument("--postgres", required=True)
    g.add_argument("--kafka", required=True)
    g.add_argument("--schema-prefix", default="")
    g.add_argument("--topic-prefix", default="axon.")
    g.add_argument("--bcrypt-rounds", type=int, default=12)
    g.add_argument("--app-service-config", action="append", default=[],
                   help="an application service registration file (repeatable)")
    g.add_argument("--federation", action="store_true", help="serve the federation routes (federation.enabled)")
    g.add_argument("--federation-loopback", action="store_true",
                   help="tests/trials only: federate with servers on private addresses, self-signed "
                        "certificates accepted, no notary, short retry backoff")
    g.set_defaults(func=cmd_gen_config)
    i = sub.add_parser("init")
    i.add_argument("--config", required=True)
    i.set_defaults(func=cmd_init)
    n = sub.add_parser("nginx")
    n.add_argument("--config", required=True)
    n.add_argument("--plan", required=True)
    n.add_argument("--run-dir", required=True)
    n.add_argument("--listen-port", type=int, default=8008)
    n.add_argument("--out", required=True)
    n.add_argument("--tls-port", type=int, default=0, help="also listen with TLS here (0: no TLS listener)")
    n.add_argument("--tls-host", default="127.0.0.1", help="address of the TLS listener")
    n.add_argument("--tls-cert", default="", help="certificate chain (PEM) of the TLS listener")
    n.add_argument("--tls-key", default="", help="private key (PEM) of the TLS listener")
    n.set_defaults(func=cmd_nginx)
    w = sub.add_parser("wait-ready")
    w.add_argument("--plan", required=True)
    w.add_argument("--timeout", type=float, default=120)
    w.add_argument("--extra-port", type=int, action="append", default=[])
    w.add_argument("--pids", help="fail as soon as a PID listed here (first column) is gone")
    w.set_defaults(func=cmd_wait_ready)
    a = p.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
