"""The syncapi storage suite, on SQLite and on PostgreSQL (AXON_TEST_POSTGRES)."""
from __future__ import annotations

import asyncio
import os


from services.syncapi.api import ReceiptRecord, ToDeviceRecord
from services.syncapi.filters import EventFilter, SyncFilter
from services.syncapi.history import History
from services.syncapi.streams import parse_token
from services.syncapi.sync import SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, Harness

A, B = "@alice:test.local", "@bob:test.local"
PG = os.environ.get("AXON_TEST_POSTGRES")


async def test_projection_sync_and_pagination(h: Harness) -> None:
    room = FakeRoom("!s:test.local")
    for rec in room.create(A) + [room.join(B)]:
        await h.projector.on_output(rec)
    msgs = [room.msg(A, f"m{i}") for i in range(12)]
    for rec in msgs:
        assert await h.projector.on_output(rec)
    assert not await h.projector.on_output(msgs[3])  # redelivery
    resp, _ = await h.engine.build(SyncRequest(B, "D", filter=SyncFilter.parse({"room": {"timeline": {"limit": 4}}})))
    jr = resp["rooms"]["join"][room.room_id]
    assert [e["content"]["body"] for e in jr["timeline"]["events"]] == ["m8", "m9", "m10", "m11"]
    page = await History(h.store, h.positions).messages(room.room_id, B, None, from_=jr["timeline"]["prev_batch"],
                                                         to=None, dir_="b", limit=100, flt=EventFilter())
    ids = [e["event_id"] for e in reversed(page["chunk"])] + [e["event_id"] for e in jr["timeline"]["events"]]
    assert ids == room.last
    # Positions survive a reload from the database.
    assert (await h.store.positions())["events"] == h.positions.events


async def test_concurrent_rooms_positions_are_unique_and_ordered(h: Harness) -> None:
    rooms = [FakeRoom(f"!c{i}:test.local") for i in range(4)]
    for room in rooms:
        for rec in room.create(A):
            await h.projector.on_output(rec)

    async def run(room: FakeRoom) -> None:
        for i in range(10):
            await h.projector.on_output(room.msg(A, f"{room.room_id}-{i}"))

    await asyncio.gather(*(run(r) for r in rooms))
    resp, _ = await h.engine.build(SyncRequest(A, "D", filter=SyncFilter.parse({"room": {"timeline": {"limit": 50}}})))
    for room in rooms:
        evs = resp["rooms"]["join"][room.room_id]["timeline"]["events"]
        assert [e["event_id"] for e in evs] == room.last
    assert h.positions.events == (await h.store.positions())["events"]


async def test_receipts_and_to_device(h: Harness) -> None:
    room = FakeRoom("!rt:test.local")
    for rec in room.create(A) + [room.join(B)]:
        await h.projector.on_output(rec)
    tok = (await h.engine.build(SyncRequest(B, "D")))[0]["next_batch"]
    await h.projector.on_receipt(ReceiptRecord(room.room_id, A, "m.read", room.last[-1], 5))
    await h.projector.on_to_device(ToDeviceRecord(A, "m.x", B, "D", {"a": 1}, "id1"))
    resp, has = await h.engine.build(SyncRequest(B, "D", since=parse_token(tok)))
    assert has
    assert resp["to_device"]["events"][0]["content"] == {"a": 1}
    eph = resp["rooms"]["join"][room.room_id]["ephemeral"]["events"]
    assert eph[0]["content"][room.last[-1]]["m.read"][A] == {"ts": 5}
