"""2 roomserver + 2 syncapi replicas: concurrent sends into many rooms reach every
/sync client exactly once, in order per room (consecutive /sync requests are dealt
to both syncapi replicas by the router)."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from .conftest import Cluster
from .harness import SyncCollector, check_exactly_once_in_order, create_room, join, register, send_until_acked

pytestmark = [pytest.mark.cluster]

ROOMS = 12
PER_ROOM = 8


async def test_concurrent_sends_delivered_exactly_once_in_order(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=60,
                                 limits=httpx.Limits(max_connections=100)) as http:
        alice, bob = await register(http), await register(http)
        rooms = await asyncio.gather(*(create_room(http, alice, [bob.user_id]) for _ in range(ROOMS)))
        await asyncio.gather(*(join(http, bob, r) for r in rooms))
        collectors = [SyncCollector(http, alice), SyncCollector(http, bob)]
        for c in collectors:
            await c.initial()
            c.start()

        async def room_burst(room_id: str) -> list[str]:
            ids = []
            for i in range(PER_ROOM):  # in order within a room; rooms in parallel
                eid = await send_until_acked(http, alice, room_id, f"d{i}", f"m{i}", deadline_s=60)
                assert eid is not None
                ids.append(eid)
            return ids

        sent = dict(zip(rooms, await asyncio.gather(*(room_burst(r) for r in rooms))))
        try:
            for c in collectors:
                await c.wait_for(sent, timeout_s=30)
        finally:
            for c in collectors:
                await c.stop()
        for c in collectors:
            assert not [e for e in c.errors if not e.startswith("transient")], c.errors
            assert check_exactly_once_in_order(c.seen, sent) == []
        # The read side agrees: /messages of a room lists the sends in order.
        r = await http.get(f"/_matrix/client/v3/rooms/{rooms[0]}/messages", headers=alice.headers,
                           params={"dir": "b", "limit": 100})
        assert r.status_code == 200
        got = [e["event_id"] for e in r.json()["chunk"] if e["type"] == "m.room.message"]
        assert list(reversed(got)) == sent[rooms[0]]
