"""Property: whatever the interleaving of rooms, sync points and limits, the events
a client sees through incremental /sync plus back-pagination from each prev_batch
are exactly the room's events, in order, each once."""
from __future__ import annotations

import asyncio
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.syncapi.filters import EventFilter, SyncFilter
from services.syncapi.history import History
from services.syncapi.streams import parse_token
from services.syncapi.sync import SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, make_harness, sqlite_db

A, B = "@alice:test.local", "@bob:test.local"
EXAMPLES = 200 if os.environ.get("AXON_LONG_FUZZ") else 8

# A script: each step sends a message to room 0/1 ("s0"/"s1") or syncs ("sync").
steps = st.lists(st.sampled_from(["s0", "s1", "sync"]), min_size=1, max_size=40)


async def run(script: list[str], limit: int, page: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = await sqlite_db(d)
        try:
            h = await make_harness(db)
            rooms = [FakeRoom(f"!p{i}:test.local") for i in range(2)]
            for room in rooms:
                for rec in room.create(A) + [room.join(B)]:
                    await h.projector.on_output(rec)
            flt = SyncFilter.parse({"room": {"timeline": {"limit": limit}}})
            hist = History(h.store, h.positions)
            seen: dict[str, list[str]] = {r.room_id: [] for r in rooms}
            since = None
            n = 0
            for step in script + ["sync"]:
                if step != "sync":
                    room = rooms[int(step[1])]
                    await h.projector.on_output(room.msg(A, f"{n}"))
                    n += 1
                    continue
                resp, _ = await h.engine.build(SyncRequest(B, "D", since=parse_token(since) if since else None,
                                                           filter=flt))
                for room_id, jr in resp["rooms"]["join"].items():
                    tl = jr["timeline"]
                    got = [e["event_id"] for e in tl["events"]]
                    if tl["limited"]:
                        # Fill the gap back to what we already have.
                        gap: list[str] = []
                        token = tl["prev_batch"]
                        while True:
                            p = await hist.messages(room_id, B, None, from_=token, to=since, dir_="b", limit=page,
                                                    flt=EventFilter())
                            gap[:0] = [e["event_id"] for e in reversed(p["chunk"])]
                            if "end" not in p:
                                break
                            token = p["end"]
                        got = gap + got
                    seen[room_id].extend(got)
                since = resp["next_batch"]
            for room in rooms:
                assert seen[room.room_id] == room.last
        finally:
            await db.close()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(script=steps, limit=st.integers(1, 6), page=st.integers(1, 5))
def test_sync_plus_pagination_sees_every_event_once(script: list[str], limit: int, page: int) -> None:
    asyncio.run(run(script, limit, page))
