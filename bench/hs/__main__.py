"""python -m bench.hs — run the homeserver benchmark (see bench/README.md)."""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hs import report
from bench.hs.client import new_session
from bench.hs.launcher import LaunchError, Server, log_tail
from bench.hs.procs import TreeSampler
from bench.hs.scenarios import Phase, delivery_latency, initial_sync, make_users, send_throughput

log = logging.getLogger("bench.hs")


@dataclass(frozen=True)
class Options:
    users: int = 10
    messages: int = 50
    delivery_messages: int = 200
    delivery_rate: float = 20.0
    sync_rooms: int = 20
    sync_history: int = 20
    sync_repeats: int = 5
    send_limit_s: float = 30.0
    delivery_limit_s: float = 45.0
    server_budget_s: float = 400.0

    @classmethod
    def quick(cls) -> Options:
        return cls(users=4, messages=10, delivery_messages=20, delivery_rate=50.0,
                   sync_rooms=3, sync_history=3, sync_repeats=2, send_limit_s=20.0, delivery_limit_s=20.0,
                   server_budget_s=120.0)


async def _phase(name: str, coro: Any, budget_s: float, phases: list[Phase]) -> None:
    t0 = time.perf_counter()
    try:
        phase = await asyncio.wait_for(coro, budget_s)
    except TimeoutError:
        phase = Phase(name, errors=[f"phase did not finish within {budget_s:.0f}s"])
    except Exception as e:  # noqa: BLE001 - one broken phase must not lose the others' figures
        phase = Phase(name, errors=[f"{type(e).__name__}: {e}"])
    log.warning("  %-13s %5.1fs %s%s", name, time.perf_counter() - t0,
                " ".join(f"{k}={v:.1f}" for k, v in phase.metrics.items()),
                f" ERRORS={len(phase.errors)}: {phase.errors[0][:200]}" if phase.errors else "")
    phases.append(phase)


async def bench_server(server: Server, opts: Options) -> dict[str, Any]:
    """Every scenario against one running homeserver; its metrics plus the detail."""
    sampler = TreeSampler(server.pid) if server.pid else None
    if sampler:
        sampler.start()
    cpu_start = sampler.last_cpu_seconds if sampler else 0.0
    phases: list[Phase] = []
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    log.warning("bench %s at %s (pid %s)", server.name, server.base_url, server.pid)
    async with new_session() as http:
        async def run_all() -> None:
            users = await make_users(http, server.base_url, "bu", opts.users)
            await _phase("send_shared", send_throughput(users, shared_room=True, messages_each=opts.messages,
                                                         time_limit_s=opts.send_limit_s),
                         opts.send_limit_s + 60, phases)
            await _phase("send_own", send_throughput(users, shared_room=False, messages_each=opts.messages,
                                                      time_limit_s=opts.send_limit_s),
                         opts.send_limit_s + 60, phases)
            await _phase("delivery", delivery_latency(
                users[0], users[1], messages=opts.delivery_messages, rate_per_s=opts.delivery_rate,
                deadline_s=20.0, time_limit_s=opts.delivery_limit_s), opts.delivery_limit_s + 40, phases)
            syncer = (await make_users(http, server.base_url, "bs", 1))[0]
            await _phase("initial_sync", initial_sync(
                syncer, users[1:4], rooms=opts.sync_rooms, history=opts.sync_history,
                repeats=opts.sync_repeats), 0.45 * opts.server_budget_s, phases)

        setup_error = None
        try:
            await asyncio.wait_for(run_all(), opts.server_budget_s)
        except TimeoutError:
            setup_error = f"run did not finish within {opts.server_budget_s:.0f}s"
        except Exception as e:  # noqa: BLE001 - report, keep what was measured
            setup_error = f"{type(e).__name__}: {e}"
        if setup_error:
            log.warning("  %s: %s", server.name, setup_error)
    if sampler:
        sampler.stop()
    metrics: dict[str, float] = {}
    for p in phases:
        metrics.update(p.metrics)
    if sampler and sampler.samples:
        metrics["peak_rss_mb"] = sampler.peak_rss_bytes / 2**20
        metrics["server_cpu_s"] = sampler.last_cpu_seconds - cpu_start
    sends = [p for p in phases if p.name.startswith("send") and p.wall_s > 0]
    if sends:
        metrics["client_cpu_pct"] = 100 * sum(p.client_cpu_s for p in sends) / sum(p.wall_s for p in sends)
    return {
        "name": server.name, "version": server.version, "base_url": server.base_url, "pid": server.pid,
        "metrics": metrics, "phases": [p.to_json() for p in phases], "error": setup_error,
        "wall_s": time.perf_counter() - t_start, "rss_samples": sampler.samples if sampler else 0,
        # Background load on the machine during this server's run (1-min load averages).
        "loadavg_1m": {"start": load_start[0], "end": os.getloadavg()[0]},
    }


async def _start(name: str, workdir: Path, synapse_venv: Path) -> Server:
    if name == "axon":
        from bench.hs.axon_server import start_axon

        return await start_axon(workdir / "axon")
    if name == "synapse":
        from bench.hs.synapse import start_synapse

        return await start_synapse(workdir / "synapse", venv=synapse_venv)
    raise SystemExit(f"bench.hs: unknown server {name!r} (axon, synapse)")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    opts = Options.quick() if args.quick else Options(
        users=args.users, messages=args.messages, delivery_messages=args.delivery_messages,
        delivery_rate=args.delivery_rate, sync_rooms=args.sync_rooms, sync_history=args.sync_history,
        sync_repeats=args.sync_repeats, send_limit_s=args.send_limit, delivery_limit_s=args.delivery_limit,
        server_budget_s=args.server_budget)
    results: dict[str, Any] = {}
    if args.target:
        server = Server(name=args.label, base_url=args.target.rstrip("/"), pid=args.pid)
        results[args.label] = await bench_server(server, opts)
        return _document(results, opts)
    workdir = Path(tempfile.mkdtemp(prefix="hs-", dir=args.workdir))
    try:
        for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
            try:
                server = await _start(name, workdir, Path(args.synapse_venv))
            except LaunchError as e:
                log.warning("%s did not start: %s", name, e)
                results[name] = {"name": name, "metrics": {}, "error": str(e)}
                continue
            try:
                results[name] = await bench_server(server, opts)
            finally:
                rc = await server.stop()
                if rc not in (0, None, -15):
                    log.warning("%s exited with %s; log tail:\n%s", name, rc, log_tail(server.log_path, 10))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return _document(results, opts)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _document(results: dict[str, Any], opts: Options) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    # Other work on the machine skews every figure; the load average shows it.
                    "loadavg_at_end": list(os.getloadavg())},
        "options": opts.__dict__,
        "servers": results,
    }
    if "axon" in results and "synapse" in results:
        rows = report.compare(results["axon"]["metrics"], results["synapse"]["metrics"])
        doc["comparison"] = [r.to_json() for r in rows]
        doc["markdown"] = report.markdown_comparison(rows)
    else:
        doc["markdown"] = "\n\n".join(report.markdown_single(n, r["metrics"]) for n, r in results.items())
    # The row labels name the default workload; say what actually ran.
    doc["markdown"] += (
        f"\n\nworkload: {opts.users} senders × {opts.messages} messages (≤ {opts.send_limit_s:g} s);"
        f" delivery {opts.delivery_messages} messages at {opts.delivery_rate:g}/s;"
        f" initial /sync in {opts.sync_rooms} rooms × {opts.sync_history} messages, median of {opts.sync_repeats}."
        f" Versions: " + ", ".join(f"{n} {r.get('version') or '?'}" for n, r in results.items()) + "."
    )
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hs", description=__doc__)
    p.add_argument("--servers", default="axon,synapse", help="which to start, in order (axon,synapse)")
    p.add_argument("--target", help="bench an already running homeserver at this URL instead")
    p.add_argument("--pid", type=int, action="append",
                   help="with --target: the server's PID, for RSS/CPU of its process tree (repeat for a cluster)")
    p.add_argument("--label", default="target", help="with --target: its name in the report")
    p.add_argument("--quick", action="store_true", help="tiny workload (smoke test)")
    p.add_argument("--users", type=int, default=10, help="concurrent senders")
    p.add_argument("--messages", type=int, default=50, help="messages per sender")
    p.add_argument("--delivery-messages", type=int, default=200)
    p.add_argument("--delivery-rate", type=float, default=20.0, help="messages/s for send→/sync")
    p.add_argument("--sync-rooms", type=int, default=20)
    p.add_argument("--sync-history", type=int, default=20, help="messages per room")
    p.add_argument("--sync-repeats", type=int, default=5)
    p.add_argument("--send-limit", type=float, default=30.0, help="seconds: senders stop after this")
    p.add_argument("--delivery-limit", type=float, default=45.0, help="seconds: delivery sender stops after this")
    p.add_argument("--server-budget", type=float, default=400.0, help="seconds per server, all phases")
    p.add_argument("--synapse-venv", default=".run/bench/synapse-venv")
    p.add_argument("--workdir", default=None, help="parent of the temporary data dirs")
    p.add_argument("--keep", action="store_true", help="keep the servers' data dirs and logs")
    p.add_argument("--out", default=".run/bench/hs.json")
    args = p.parse_args(argv)
    if args.users < 2 and not args.quick:
        p.error("--users must be at least 2")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    doc = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    out.with_suffix(".md").write_text(doc["markdown"] + "\n")
    print(doc["markdown"])
    print(f"\n(JSON: {out})")
    failed = [n for n, r in doc["servers"].items() if r.get("error")]
    return 1 if failed and len(failed) == len(doc["servers"]) else 0


if __name__ == "__main__":
    sys.exit(main())
