"""Start and stop an Axon cluster for the bench with scripts/cluster.sh (its own dir,
ports, database, schema and topic prefixes), and Synapse's PostgreSQL database."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("bench.cluster")

ROOT = Path(__file__).resolve().parents[2]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_block(first: int, size: int, last: int = 32000) -> int:
    """The first port p >= first with p..p+size-1 all free, below the ephemeral range
    (an outgoing connection cannot take a chosen port while the cluster starts)."""
    p = first
    while p + size <= last:
        bad = next((q for q in range(p, p + size) if not port_free(q)), None)
        if bad is None:
            return p
        p = bad + 1
    raise RuntimeError(f"no {size} free ports between {first} and {last}")


@dataclass
class Cluster:
    """A started cluster: router URL, service processes (name, port) and PIDs."""

    label: str
    dir: Path
    base_url: str
    plan: list[tuple[str, int]]
    pids: list[int] = field(default_factory=list)
    pid_of_port: dict[int, int] = field(default_factory=dict)  # service port -> its process
    topic_prefix: str = ""
    schema_prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def ports(self, service: str) -> list[int]:
        return [p for n, p in self.plan if n == service]


async def _run(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode("utf-8", "replace")
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def start_cluster(workdir: Path, label: str, *, roomservers: int, syncapis: int, first_port: int = 24000,
                        pg_port: int = 55432, kafka_port: int = 59092, database: str = "bench_cluster",
                        python: str | None = None, ready_timeout_s: float = 240.0) -> Cluster:
    # clientapi, userapi, mediaapi, federationapi, appservice, + slack for services added later
    n_procs = roomservers + syncapis + 8
    router = free_block(first_port, n_procs + 1)
    tag = uuid.uuid4().hex[:8]
    cdir = workdir / label
    env = {
        **os.environ,
        "CLUSTER_DIR": str(cdir), "ROUTER_PORT": str(router), "BASE_PORT": str(router + 1),
        "ROOMSERVERS": str(roomservers), "SYNCAPIS": str(syncapis),
        "CLIENTAPIS": "1", "USERAPIS": "1", "MEDIAAPIS": "1", "FEDERATIONAPIS": "1",
        "PG_PORT": str(pg_port), "KAFKA_PORT": str(kafka_port), "CLUSTER_DB": database,
        "TOPIC_PREFIX": f"bench{tag}.", "SCHEMA_PREFIX": f"bench{tag}_", "BCRYPT_ROUNDS": "4",
        "READY_TIMEOUT": str(int(ready_timeout_s)),
        # Only set-up and errors in the service logs; the bench reads /metrics.
        "AXON_LOGGING__LEVEL": "WARNING",
    }
    if python:
        env["PYTHON"] = python
    cluster = Cluster(label=label, dir=cdir, base_url=f"http://127.0.0.1:{router}", plan=[],
                      topic_prefix=env["TOPIC_PREFIX"], schema_prefix=env["SCHEMA_PREFIX"], env=env)
    rc, out = await _run([str(ROOT / "scripts" / "cluster.sh"), "start"], env, ready_timeout_s + 120)
    if rc != 0:
        await stop_cluster(cluster)
        raise RuntimeError(f"cluster {label} did not start (rc {rc}):\n{out[-3000:]}")
    for line in (cdir / "plan").read_text().splitlines():
        name, port = line.split()
        cluster.plan.append((name, int(port)))
    for line in (cdir / "pids").read_text().splitlines():
        parts = line.split()
        cluster.pids.append(int(parts[0]))
        if len(parts) >= 4 and parts[1] == "run-service":
            cluster.pid_of_port[int(parts[3])] = int(parts[0])
    return cluster


async def stop_cluster(cluster: Cluster) -> None:
    rc, out = await _run([str(ROOT / "scripts" / "cluster.sh"), "stop"], cluster.env, 120)
    if rc != 0:
        log.warning("cluster %s stop: rc %s: %s", cluster.label, rc, out[-500:])


async def drop_cluster_data(cluster: Cluster, pg_dsn: str, kafka: str) -> None:
    """Best effort: the run's schemas (PostgreSQL) and topics (Kafka) go away."""
    try:
        import asyncpg

        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                                    cluster.schema_prefix.replace("_", r"\_") + "%")
            for r in rows:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{r[0]}" CASCADE')
        finally:
            await conn.close()
    except Exception as e:  # noqa: BLE001 - cleanup only
        log.warning("dropping schemas %s*: %r", cluster.schema_prefix, e)
    try:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(cluster.topic_prefix)]
            if topics:
                await admin.delete_topics(topics)
        finally:
            await admin.close()
    except Exception as e:  # noqa: BLE001 - cleanup only
        log.warning("deleting topics %s*: %r", cluster.topic_prefix, e)


async def fresh_database(admin_dsn: str, name: str) -> None:
    """(Re)create database `name` (UTF8, C collation, as Synapse requires) on the server of admin_dsn."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                           "TEMPLATE template0")
    finally:
        await conn.close()


async def ensure_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
