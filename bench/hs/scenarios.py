"""The workloads. Each one is bounded in count; the caller bounds it in time."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.hs.client import BenchHttpError, User, register
from bench.hs.procs import CpuClock
from bench.hs.stats import median, rate, summarize

log = logging.getLogger("bench.hs")

PASSWORD = "bench-password-1"


@dataclass
class Phase:
    """What one timed phase measured, plus the client's own CPU during it."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "metrics": self.metrics, "detail": self.detail,
                "client_cpu_s": self.client_cpu_s, "wall_s": self.wall_s,
                "client_cpu_pct": 100 * self.client_cpu_s / self.wall_s if self.wall_s else None,
                "errors": self.errors[:20], "error_count": len(self.errors)}


async def make_users(http: aiohttp.ClientSession, base: str, prefix: str, n: int,
                     concurrency: int = 4) -> list[User]:
    """Register n fresh users (a random suffix keeps reruns against one server apart)."""
    tag = uuid.uuid4().hex[:6]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> User:
        async with sem:
            return await register(http, base, f"{prefix}{tag}{i}", PASSWORD)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def send_throughput(users: list[User], *, shared_room: bool, messages_each: int,
                          warmup_each: int = 5, time_limit_s: float = 60.0) -> Phase:
    """Every user sends `messages_each` messages back to back, all users at once.

    shared_room: one room all users are in; else each user sends in a room of its own.
    Senders stop early after time_limit_s, so a slow server still yields a rate."""
    key = "send_shared" if shared_room else "send_own"
    phase = Phase(key)
    if shared_room:
        room = await users[0].create_room(preset="public_chat")
        for u in users[1:]:
            await u.join(room)
        rooms = [room] * len(users)
    else:
        rooms = list(await asyncio.gather(*(u.create_room(preset="private_chat") for u in users)))
    # Warm-up: connections open, caches warm, first-write paths taken; not timed.
    await asyncio.gather(*(_send_n(u, r, warmup_each, "warm", [], []) for u, r in zip(users, rooms)))

    latencies: list[float] = []
    errors: list[str] = []
    clock = CpuClock()
    stop_at = time.perf_counter() + time_limit_s
    await asyncio.gather(*(_send_n(u, r, messages_each, "m", latencies, errors, stop_at)
                           for u, r in zip(users, rooms)))
    phase.client_cpu_s, phase.wall_s = clock.read()
    phase.errors = errors
    sent = len(latencies)
    phase.metrics[f"{key}_msgs_per_s"] = rate(sent, phase.wall_s)
    if latencies:
        s = summarize(latencies)
        phase.metrics[f"{key}_p50_ms"] = s.p50_ms
        phase.metrics[f"{key}_p99_ms"] = s.p99_ms
        phase.detail["latency"] = s.to_json()
    phase.detail.update(senders=len(users), rooms=len(set(rooms)), messages_ok=sent,
                        messages_attempted=len(users) * messages_each)
    return phase


async def _send_n(user: User, room: str, n: int, label: str, latencies: list[float], errors: list[str],
                  stop_at: float = float("inf")) -> None:
    for i in range(n):
        t0 = time.perf_counter()
        if t0 >= stop_at:
            errors.append(f"time limit: {n - i} of {n} messages not sent")
            return
        try:
            await user.send_text(room, f"{label} {i}")
        except (BenchHttpError, aiohttp.ClientError, TimeoutError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        latencies.append(time.perf_counter() - t0)


def _timeline_bodies(doc: dict[str, Any], room_id: str) -> list[str]:
    room = doc.get("rooms", {}).get("join", {}).get(room_id, {})
    out = []
    for ev in room.get("timeline", {}).get("events", []):
        body = ev.get("content", {}).get("body") if isinstance(ev.get("content"), dict) else None
        if ev.get("type") == "m.room.message" and isinstance(body, str):
            out.append(body)
    return out


async def delivery_latency(sender: User, receiver: User, *, messages: int, rate_per_s: float,
                           deadline_s: float, time_limit_s: float = 60.0) -> Phase:
    """A receiver long-polls /sync while a sender sends at a steady rate; for each message,
    the time from just before its PUT until a /sync response carrying it arrives.

    The sender stops after time_limit_s (a slow server still yields figures); the
    receiver then has deadline_s more to see what was sent."""
    phase = Phase("delivery")
    room = await sender.create_room(preset="public_chat")
    await receiver.join(room)
    flt = await receiver.create_filter({
        "room": {"rooms": [room], "timeline": {"limit": 50}, "state": {"lazy_load_members": True},
                 "ephemeral": {"types": []}, "account_data": {"types": []}},
        "presence": {"types": []}, "account_data": {"types": []},
    })
    first = await receiver.sync(flt=flt)
    since = str(first["next_batch"])

    sent_at: dict[int, float] = {}
    arrived_at: dict[int, float] = {}
    errors: list[str] = []
    done = asyncio.Event()
    sending_over = asyncio.Event()
    syncs = 0

    async def receive() -> None:
        nonlocal since, syncs
        while not done.is_set():
            try:
                doc = await receiver.sync(since=since, timeout_ms=30_000, flt=flt)
            except (BenchHttpError, aiohttp.ClientError, TimeoutError) as e:
                errors.append(f"sync: {type(e).__name__}: {e}")
                await asyncio.sleep(0.05)
                continue
            now = time.perf_counter()
            syncs += 1
            since = str(doc["next_batch"])
            for body in _timeline_bodies(doc, room):
                if body.startswith("lat "):
                    try:
                        k = int(body[4:])
                    except ValueError:
                        continue
                    arrived_at.setdefault(k, now)
            if sending_over.is_set() and len(arrived_at) >= len(sent_at):
                done.set()

    async def send() -> None:
        start = time.perf_counter()
        for k in range(messages):
            if time.perf_counter() - start > time_limit_s:
                errors.append(f"time limit: {messages - k} of {messages} messages not sent")
                break
            delay = start + k / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[k] = time.perf_counter()
            try:
                await sender.send_text(room, f"lat {k}")
            except (BenchHttpError, aiohttp.ClientError, TimeoutError) as e:
                errors.append(f"send: {type(e).__name__}: {e}")
                sent_at.pop(k, None)

    clock = CpuClock()
    receiver_task = asyncio.create_task(receive())
    await send()
    sending_over.set()
    if len(arrived_at) >= len(sent_at):
        done.set()
    try:
        await asyncio.wait_for(done.wait(), timeout=max(5.0, deadline_s))
    except TimeoutError:
        missing = sum(1 for k in sent_at if k not in arrived_at)
        errors.append(f"{missing} sent messages not seen by /sync within {deadline_s:.0f}s")
    done.set()
    receiver_task.cancel()
    try:
        await receiver_task
    except asyncio.CancelledError:
        pass
    phase.client_cpu_s, phase.wall_s = clock.read()
    phase.errors = errors
    lat = [arrived_at[k] - sent_at[k] for k in sent_at if k in arrived_at]
    if lat:
        s = summarize(lat)
        phase.metrics["delivery_p50_ms"] = s.p50_ms
        phase.metrics["delivery_p99_ms"] = s.p99_ms
        phase.detail["latency"] = s.to_json()
    phase.detail.update(messages=messages, sent=len(sent_at), rate_per_s=rate_per_s, delivered=len(lat),
                        sync_responses=syncs)
    return phase


async def initial_sync(syncer: User, members: list[User], *, rooms: int, history: int,
                       repeats: int) -> Phase:
    """A user in `rooms` rooms, each with `history` messages from a few members:
    time of a full initial /sync (timeline limit = history), median of `repeats`."""
    phase = Phase("initial_sync")
    sem = asyncio.Semaphore(8)
    everyone = [syncer, *members]

    async def build(i: int) -> None:
        async with sem:
            room = await syncer.create_room(preset="public_chat", name=f"bench room {i}")
            for m in members:
                await m.join(room)
            for j in range(history):
                await everyone[j % len(everyone)].send_text(room, f"history {i}.{j}")

    await asyncio.gather(*(build(i) for i in range(rooms)))

    base_filter = orjson.dumps({"room": {"timeline": {"limit": history}}}).decode()
    times: list[float] = []
    joined: list[int] = []
    clock = CpuClock()
    for r in range(repeats):
        # A distinct filter string each time (trailing spaces) so that no server can
        # answer a repeat from a response cache keyed on the request.
        flt = base_filter + " " * r
        t0 = time.perf_counter()
        try:
            doc = await syncer.sync(flt=flt)
        except (BenchHttpError, aiohttp.ClientError, TimeoutError) as e:
            phase.errors.append(f"{type(e).__name__}: {e}")
            continue
        times.append(time.perf_counter() - t0)
        join = doc.get("rooms", {}).get("join", {})
        joined.append(len(join))
        n_events = sum(len(v.get("timeline", {}).get("events", [])) for v in join.values())
        phase.detail.setdefault("timeline_events", n_events)
    phase.client_cpu_s, phase.wall_s = clock.read()
    if joined and any(j != rooms for j in joined):
        phase.errors.append(f"initial /sync listed {joined} joined rooms, expected {rooms}")
    if times:
        phase.metrics["initial_sync_median_ms"] = median(times) * 1000
        phase.detail["times_ms"] = [t * 1000 for t in times]
    phase.detail.update(rooms=rooms, history=history, members_per_room=len(everyone))
    return phase
