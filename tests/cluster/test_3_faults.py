"""kill -9 one roomserver replica and one syncapi replica during a send burst: every
acknowledged send appears exactly once, in order per room, and every /sync client
gets every event exactly once.

Clients behave like real ones: a failed PUT /send is retried with the same txn id
(idempotent), a failed /sync is retried with the same `since`. The dead roomserver's
partitions move to the survivor after Kafka's session timeout (10 s)."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from .conftest import Cluster
from .harness import SyncCollector, check_exactly_once_in_order, create_room, join, register, send_until_acked

pytestmark = [pytest.mark.cluster]

ROOMS = 10
PER_ROOM = 10


async def test_kill_roomserver_and_syncapi_replica_during_burst(cluster: Cluster) -> None:
    procs = cluster.processes()
    rs = [p for p in procs if p[1] == "roomserver"]
    sy = [p for p in procs if p[1] == "syncapi"]
    assert len(rs) == 2 and len(sy) == 2, procs
    async with httpx.AsyncClient(base_url=cluster.url, timeout=60,
                                 limits=httpx.Limits(max_connections=100)) as http:
        alice, bob = await register(http), await register(http)
        rooms = await asyncio.gather(*(create_room(http, alice, [bob.user_id]) for _ in range(ROOMS)))
        await asyncio.gather(*(join(http, bob, r) for r in rooms))
        collectors = [SyncCollector(http, alice), SyncCollector(http, bob)]
        for c in collectors:
            await c.initial()
            c.start()
        acked: dict[str, list[str]] = {r: [] for r in rooms}

        async def room_burst(room_id: str) -> None:
            for i in range(PER_ROOM):
                eid = await send_until_acked(http, alice, room_id, f"f{i}", f"m{i}", deadline_s=90)
                assert eid is not None, f"send {i} in {room_id} never acknowledged"
                acked[room_id].append(eid)
                await asyncio.sleep(0.05)

        async def killer() -> None:
            await asyncio.sleep(1.0)
            os.kill(rs[0][0], signal.SIGKILL)
            os.kill(sy[0][0], signal.SIGKILL)

        t0 = time.monotonic()
        await asyncio.gather(killer(), *(room_burst(r) for r in rooms))
        burst_s = time.monotonic() - t0
        try:
            for c in collectors:
                await c.wait_for(acked, timeout_s=60)
        finally:
            for c in collectors:
                await c.stop()
        for c in collectors:
            problems = check_exactly_once_in_order(c.seen, acked)
            assert problems == [], (problems, burst_s)
        assert sum(len(v) for v in acked.values()) == ROOMS * PER_ROOM
