"""python -m bench.cluster — Axon cluster bench (see bench/README.md)."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import report
from bench.cluster.launch import drop_cluster_data, ensure_database, fresh_database, start_cluster, stop_cluster
from bench.cluster.workload import Workload, run_workload, send_with_syncers
from bench.hs.client import new_session
from bench.hs.launcher import LaunchError
from bench.hs.scenarios import delivery_latency, make_users

log = logging.getLogger("bench.cluster")


def parse_configs(text: str) -> list[tuple[str, int, int]]:
    """"1x1,2x2" -> [("1x1", 1, 1), ("2x2", 2, 2)]: roomservers x syncapis."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)x(\d+)", part)
        if not m or not (1 <= int(m[1]) <= 8 and 1 <= int(m[2]) <= 8):
            raise ValueError(f"bad config {part!r}: want ROOMSERVERSxSYNCAPIS, e.g. 2x2")
        out.append((part, int(m[1]), int(m[2])))
    if not out:
        raise ValueError("no configuration given")
    return out


def _pg_parts(dsn: str) -> dict[str, Any]:
    m = re.fullmatch(r"postgres(?:ql)?://([^@/:]+)@([^:/]+):(\d+)(?:/.*)?", dsn)
    if not m:
        raise ValueError(f"cannot read user/host/port from {dsn!r}")
    return {"user": m[1], "host": m[2], "port": int(m[3])}


async def bench_config(label: str, rs: int, sy: int, wl: Workload, args: argparse.Namespace,
                       workdir: Path) -> dict[str, Any]:
    log.warning("cluster %s: %d roomserver(s), %d syncapi(s)", label, rs, sy)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        cluster = await start_cluster(workdir, label, roomservers=rs, syncapis=sy, first_port=args.first_port,
                                      pg_port=_pg_parts(args.pg)["port"], kafka_port=int(args.kafka.rsplit(":", 1)[1]))
    except (RuntimeError, OSError) as e:
        log.warning("cluster %s did not start: %s", label, e)
        return {"label": label, "error": str(e)[-2000:], "end_to_end": {}, "services": {}}
    log.warning("  started in %.0fs at %s", time.perf_counter() - t0, cluster.base_url)
    try:
        async with new_session() as http:
            results = await run_workload(http, cluster, wl)
        doc = report.summarize_config(label, results)
        doc["replicas"] = {"roomserver": rs, "syncapi": sy}
        doc["loadavg_1m"] = {"start": load0, "end": os.getloadavg()[0]}
        return doc
    finally:
        await stop_cluster(cluster)
        if not args.keep:
            await drop_cluster_data(cluster, args.pg.rsplit("/", 1)[0] + "/bench_cluster", args.kafka)


async def bench_synapse(wl: Workload, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.hs.synapse import postgres_database, start_synapse

    admin = args.pg
    await fresh_database(admin, "bench_synapse")
    db = postgres_database({**_pg_parts(admin), "database": "bench_synapse"})
    log.warning("synapse on PostgreSQL (bench_synapse)")
    load0 = os.getloadavg()[0]
    try:
        server = await start_synapse(workdir / "synapse", venv=Path(args.synapse_venv), database=db,
                                     ready_timeout_s=300)
    except LaunchError as e:
        return {"error": str(e), "metrics": {}}
    try:
        async with new_session() as http:
            users = await make_users(http, server.base_url, "sb", max(2, wl.users))
            phases = []
            # Same phases as the cluster's (no /metrics: Synapse's are off), bounded the same way.
            for name, coro, budget in (
                ("send", send_with_syncers(users, wl), wl.send_limit_s + 90),
                ("delivery", delivery_latency(users[0], users[1], messages=wl.delivery_messages,
                                              rate_per_s=wl.delivery_rate, deadline_s=20.0,
                                              time_limit_s=wl.delivery_limit_s), wl.delivery_limit_s + 60),
            ):
                t = time.perf_counter()
                try:
                    ph = await asyncio.wait_for(coro, budget)
                except Exception as e:  # noqa: BLE001 - keep the other phase's figures
                    from bench.hs.scenarios import Phase
                    ph = Phase(name, errors=[f"{type(e).__name__}: {e}"])
                log.warning("  %-9s %5.1fs %s", name, time.perf_counter() - t,
                            " ".join(f"{k}={v:.1f}" for k, v in ph.metrics.items()))
                phases.append(ph)
        metrics: dict[str, float] = {}
        for ph in phases:
            metrics.update(ph.metrics)
        return {"version": server.version, "metrics": metrics, "phases": [p.to_json() for p in phases],
                "loadavg_1m": {"start": load0, "end": os.getloadavg()[0]}}
    finally:
        await server.stop()


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wl = Workload.quick() if args.quick else Workload(users=args.users, messages=args.messages)
    configs = parse_configs(args.configs or ("2x2" if args.quick else "1x1,2x2"))
    await ensure_database(args.pg, "bench_cluster")
    workdir = Path(tempfile.mkdtemp(prefix="cluster-", dir=args.workdir))
    doc: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_start": list(os.getloadavg())},
        "workload": dataclasses.asdict(wl),
        "configs": {},
    }
    try:
        for label, rs, sy in configs:
            doc["configs"][label] = await bench_config(label, rs, sy, wl, args, workdir)
        with_synapse = args.synapse if args.synapse is not None else not args.quick
        if with_synapse:
            doc["synapse"] = await bench_synapse(wl, args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    labels = [c[0] for c in configs]
    doc["scaling"] = {f"{labels[0]} -> {other}": report.scaling(doc["configs"], labels[0], other)
                      for other in labels[1:]}
    doc["compare_config"] = labels[-1]
    syn = doc.get("synapse") or {}
    if syn.get("metrics"):
        doc["synapse_version"] = syn.get("version", "")
        doc["versus_synapse"] = report.versus_synapse(doc["configs"][labels[-1]]["end_to_end"], syn["metrics"])
    doc["machine"]["loadavg_at_end"] = list(os.getloadavg())
    doc["markdown"] = report.markdown(doc) + (
        f"\n\nworkload: {wl.users} users, each sending {wl.messages} messages in its own room while long-polling"
        f" /sync (≤ {wl.send_limit_s:g} s); send→/sync: {wl.delivery_messages} messages at {wl.delivery_rate:g}/s;"
        f" media: {wl.uploaders} uploaders × {wl.uploads_each} × {wl.upload_bytes // 1024} KiB."
        f" Load average (1 min) at start/end: {doc['machine']['loadavg_at_start'][0]:.1f} /"
        f" {doc['machine']['loadavg_at_end'][0]:.1f} on {os.cpu_count()} CPUs.")
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny workload, one 2x2 cluster, no Synapse (smoke test)")
    p.add_argument("--configs", default=None,
                   help="ROOMSERVERSxSYNCAPIS list, first is the scaling baseline (default 1x1,2x2; quick: 2x2)")
    p.add_argument("--users", type=int, default=Workload.users, help="concurrent senders (each its own room)")
    p.add_argument("--messages", type=int, default=Workload.messages, help="messages per sender")
    syn = p.add_mutually_exclusive_group()
    syn.add_argument("--synapse", dest="synapse", action="store_true", default=None,
                     help="also bench Synapse on PostgreSQL (default unless --quick)")
    syn.add_argument("--no-synapse", dest="synapse", action="store_false")
    p.add_argument("--synapse-venv", default=".run/bench/synapse-venv")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:55432/postgres"),
                   help="admin DSN of the PostgreSQL server (databases bench_cluster, bench_synapse are made there)")
    p.add_argument("--kafka", default=os.environ.get("BENCH_KAFKA", "127.0.0.1:59092"))
    p.add_argument("--first-port", type=int, default=24000, help="ports are taken from here up (below 32768)")
    p.add_argument("--workdir", default=None, help="parent of the temporary cluster dirs")
    p.add_argument("--keep", action="store_true", help="keep cluster dirs/logs, schemas and topics")
    p.add_argument("--out", default=".run/bench/cluster.json")
    args = p.parse_args(argv)
    try:
        parse_configs(args.configs or "1x1")
    except ValueError as e:
        p.error(str(e))
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    doc = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    out.with_suffix(".md").write_text(doc["markdown"] + "\n")
    print(doc["markdown"])
    print(f"\n(JSON: {out})")
    failed = [k for k, c in doc["configs"].items() if c.get("error")]
    return 1 if failed and len(failed) == len(doc["configs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
