"""The cluster workload: phases driven through the router, each bracketed by scrapes of
every service process's /metrics and CPU time, so per-service rates and per-replica
shares come from the services' own counters."""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.cluster import scrape
from bench.cluster.launch import Cluster
from bench.hs.client import BenchHttpError, User
from bench.hs.procs import _TICK, parse_stat
from bench.hs.scenarios import Phase, delivery_latency, make_users, send_throughput
from bench.hs.stats import rate, summarize

log = logging.getLogger("bench.cluster")


@dataclass(frozen=True)
class Workload:
    users: int = 20               # concurrent senders, each in its own room, each also long-polling /sync
    messages: int = 40            # per sender
    send_limit_s: float = 45.0
    delivery_messages: int = 150
    delivery_rate: float = 20.0
    delivery_limit_s: float = 30.0
    uploaders: int = 4
    uploads_each: int = 25
    upload_bytes: int = 64 * 1024

    @classmethod
    def quick(cls) -> "Workload":
        return cls(users=4, messages=10, send_limit_s=20.0, delivery_messages=20, delivery_rate=40.0,
                   delivery_limit_s=10.0, uploaders=2, uploads_each=5, upload_bytes=16 * 1024)


@dataclass
class Snapshot:
    at: float
    metrics: dict[tuple[str, int], scrape.Scrape]   # (service, port) -> samples
    cpu_s: dict[tuple[str, int], float]


@dataclass
class PhaseResult:
    name: str
    phase: Phase
    wall_s: float  # the phase's own timed span when it reports one, else between the scrapes
    # (client-side rates use wall_s; the services' counters, which include set-up, span_s)
    span_s: float = 0.0  # between the two scrapes (CPU shares are over this)
    work: dict[tuple[str, int], scrape.Scrape] = field(default_factory=dict)   # per-process deltas
    cpu_s: dict[tuple[str, int], float] = field(default_factory=dict)


async def snapshot(http: aiohttp.ClientSession, cluster: Cluster) -> Snapshot:
    async def one(name: str, port: int) -> tuple[tuple[str, int], scrape.Scrape]:
        try:
            async with http.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
                return (name, port), scrape.parse(await r.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("scrape %s:%d failed: %r", name, port, e)
            return (name, port), {}

    at = time.perf_counter()
    cpu: dict[tuple[str, int], float] = {}
    for n, p in cluster.plan:
        pid = cluster.pid_of_port.get(p)
        c = _cpu_seconds(pid) if pid else None
        if c is not None:
            cpu[(n, p)] = c
    got = dict(await asyncio.gather(*(one(n, p) for n, p in cluster.plan)))
    return Snapshot(at, got, cpu)


def _cpu_seconds(pid: int) -> float | None:
    """utime+stime of one process (a run-service process has no children)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            _ppid, ut, st, _rss = parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None
    return (ut + st) / _TICK


def diff(a: Snapshot, b: Snapshot) -> tuple[dict[tuple[str, int], scrape.Scrape], dict[tuple[str, int], float]]:
    work = {k: scrape.delta(a.metrics.get(k, {}), v) for k, v in b.metrics.items()}
    cpu = {k: b.cpu_s[k] - a.cpu_s[k] for k in b.cpu_s if k in a.cpu_s}
    return work, cpu


async def _measured(http: aiohttp.ClientSession, cluster: Cluster, coro: Any, name: str,
                    budget_s: float) -> PhaseResult:
    before = await snapshot(http, cluster)
    try:
        phase = await asyncio.wait_for(coro, budget_s)
    except TimeoutError:
        phase = Phase(name, errors=[f"phase did not finish within {budget_s:.0f}s"])
    except Exception as e:  # noqa: BLE001 - one broken phase must not lose the others' figures
        phase = Phase(name, errors=[f"{type(e).__name__}: {e}"])
    after = await snapshot(http, cluster)
    work, cpu = diff(before, after)
    wall = phase.wall_s if phase.wall_s > 0 else after.at - before.at
    res = PhaseResult(name, phase, wall, after.at - before.at, work, cpu)
    log.warning("  %-9s %5.1fs %s%s", name, res.wall_s,
                " ".join(f"{k}={v:.1f}" for k, v in phase.metrics.items()),
                f" ERRORS={len(phase.errors)}: {phase.errors[0][:200]}" if phase.errors else "")
    return res


async def _sync_loop(user: User, stop: asyncio.Event, counter: list[int]) -> None:
    """A client long-polling /sync (its own rooms' timelines, 1 event each) until `stop`."""
    flt = await user.create_filter({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}},
                                    "presence": {"types": []}, "account_data": {"types": []}})
    since = str((await user.sync(flt=flt))["next_batch"])
    while not stop.is_set():
        try:
            doc = await user.sync(since=since, timeout_ms=10_000, flt=flt, http_timeout_s=30)
        except (BenchHttpError, aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        since = str(doc.get("next_batch", since))
        counter[0] += 1


async def send_with_syncers(users: list[User], wl: Workload) -> Phase:
    """Every user sends in its own room while every user long-polls /sync."""
    stop = asyncio.Event()
    responses = [0]
    syncers = [asyncio.create_task(_sync_loop(u, stop, responses)) for u in users]
    try:
        phase = await send_throughput(users, shared_room=False, messages_each=wl.messages,
                                      time_limit_s=wl.send_limit_s)
    finally:
        stop.set()
        for t in syncers:
            t.cancel()
        await asyncio.gather(*syncers, return_exceptions=True)
    phase.detail["sync_responses"] = responses[0]
    return phase


async def uploads(users: list[User], wl: Workload) -> Phase:
    """`uploaders` users each POST `uploads_each` files of `upload_bytes` to /media/v3/upload."""
    phase = Phase("media")
    body = os.urandom(wl.upload_bytes)
    lat: list[float] = []

    async def one(u: User) -> None:
        for i in range(wl.uploads_each):
            t0 = time.perf_counter()
            try:
                async with u.http.post(f"{u.base}/_matrix/media/v3/upload", data=body,
                                       params={"filename": f"b{uuid.uuid4().hex[:6]}.bin"},
                                       headers={"Authorization": f"Bearer {u.token}",
                                                "Content-Type": "application/octet-stream"}) as r:
                    await r.read()
                    if r.status != 200:
                        phase.errors.append(f"upload: HTTP {r.status}")
                        continue
            except (aiohttp.ClientError, TimeoutError) as e:
                phase.errors.append(f"upload: {type(e).__name__}: {e}")
                continue
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(u) for u in users[: wl.uploaders]))
    phase.wall_s = time.perf_counter() - t0
    phase.metrics["uploads_per_s"] = rate(len(lat), phase.wall_s)
    if lat:
        s = summarize(lat)
        phase.metrics["upload_p50_ms"] = s.p50_ms
        phase.detail["latency"] = s.to_json()
    phase.detail.update(uploads_ok=len(lat), bytes_each=wl.upload_bytes)
    return phase


async def run_workload(http: aiohttp.ClientSession, cluster: Cluster, wl: Workload) -> list[PhaseResult]:
    users = await make_users(http, cluster.base_url, "cb", max(2, wl.users))
    out = [await _measured(http, cluster, send_with_syncers(users, wl), "send", wl.send_limit_s + 90)]
    out.append(await _measured(http, cluster, delivery_latency(
        users[0], users[1], messages=wl.delivery_messages, rate_per_s=wl.delivery_rate, deadline_s=20.0,
        time_limit_s=wl.delivery_limit_s), "delivery", wl.delivery_limit_s + 60))
    out.append(await _measured(http, cluster, uploads(users, wl), "media", 120))
    return out
