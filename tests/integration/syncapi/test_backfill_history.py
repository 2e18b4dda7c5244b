"""Backfilled history (negative stream positions) in the syncapi store: placed once per
event ID, and never listed by /sync as new, even for a `since` token whose events
position is negative (a /messages `end` inside backfilled history). SQLite and PostgreSQL."""
from __future__ import annotations

import os
from typing import Any


from services.syncapi.api import StreamToken
from services.syncapi.filters import EventFilter
from services.syncapi.history import History
from services.syncapi.streams import parse_token
from services.syncapi.sync import SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, Harness

A, B = "@alice:test.local", "@bob:test.local"
PG = os.environ.get("AXON_TEST_POSTGRES")


async def _room_with_history(h: Harness) -> tuple[FakeRoom, list[dict[str, Any]], str]:
    """A room whose timeline starts at Bob's join, plus 5 older messages backfilled below
    it (newest first, as the roomserver answers). Returns (room, old pdus, join ID)."""
    room = FakeRoom("!bf:test.local")
    for rec in room.create(A):
        await h.projector.on_output(rec)
    old = [room.make("m.room.message", A, {"msgtype": "m.text", "body": f"old {i}"}) for i in range(5)]
    for pdu in old:  # the DAG goes on through them; the syncapi never saw them
        room.events[pdu["event_id"]] = pdu
        room.last.append(pdu["event_id"])
    join = room.join(B)
    await h.projector.on_output(join)
    return room, list(reversed(old)), join.event["event_id"]


async def test_backfill_places_each_event_once(h: Harness) -> None:
    room, old, join_id = await _room_with_history(h)
    join_pdu = room.events[join_id]
    # The remote's answer repeats our join (and an event twice): neither is placed again.
    assert await h.store.insert_historical(room.room_id, [join_pdu, old[0], old[0]] + old[1:]) == 5
    assert await h.store.insert_historical(room.room_id, [join_pdu] + old) == 0
    pos = await h.store.event_pos(join_id)
    assert pos is not None and pos[1] > 0  # the join keeps its live position
    seen: list[str] = []
    frm: str | None = None
    hist = History(h.store, h.positions)
    for _ in range(20):
        page = await hist.messages(room.room_id, B, None, from_=frm, to=None, dir_="b", limit=2,
                                   flt=EventFilter())
        seen += [e["event_id"] for e in page["chunk"]]
        if "end" not in page:
            break
        frm = page["end"]
    assert len(seen) == len(set(seen))
    assert seen[0] == join_id
    assert seen[-5:] == [p["event_id"] for p in old]  # below the room's (locally projected) creation
    assert parse_token(frm or "").events < 0  # the last token points into backfilled history


async def test_sync_since_a_negative_events_position_lists_no_history(h: Harness) -> None:
    room, old, _ = await _room_with_history(h)
    assert await h.store.insert_historical(room.room_id, old) == 5
    old_ids = {p["event_id"] for p in old}
    neg = StreamToken(events=-3)  # as a /messages `end` inside the backfilled events
    # Every range the engine reads starts at 0 or later, never inside the history.
    afters: list[int] = []
    orig = h.store.rooms_with_events

    async def spy(room_ids: Any, after: int, upto: int) -> set[str]:
        afters.append(after)
        return await orig(room_ids, after, upto)

    h.store.rooms_with_events = spy  # type: ignore[method-assign]
    resp, has_data = await h.engine.build(SyncRequest(B, "D", since=neg))
    assert min(afters, default=0) >= 0
    timeline = resp.get("rooms", {}).get("join", {}).get(room.room_id, {}).get("timeline", {}).get("events", [])
    assert not old_ids & {e["event_id"] for e in timeline}
    assert parse_token(resp["next_batch"]).events == h.positions.events
    # Something new after it: only that is listed.
    new = room.send("m.room.message", A, {"msgtype": "m.text", "body": "new"})
    await h.projector.on_output(new)
    resp, has_data = await h.engine.build(SyncRequest(B, "D", since=neg))
    timeline = resp["rooms"]["join"][room.room_id]["timeline"]["events"]
    ids = [e["event_id"] for e in timeline]
    assert has_data and new.event["event_id"] in ids
    assert not old_ids & set(ids)
