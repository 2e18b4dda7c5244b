"""Client txn IDs are scoped to the request path: the same txn ID sent by one device
into two rooms (or as a message and a redaction) makes distinct events; a retry in
the same room with the same ID stays idempotent. (The cluster delivery bug: rooms
after the first answered with the first room's event and dropped the send.)"""
from __future__ import annotations

from dataclasses import asdict

from services.roomserver.api import CreateRoomRequest, NewEventRequest
from services.roomserver.create import random_room_id
from services.roomserver.input import RoomInputProcessor, txn_key
from services.roomserver.storage.store import RoomserverStore

from .conftest import SERVER

A = f"@alice:{SERVER}"


def _msg(rid: str, txn: str, body: str, type_: str = "m.room.message", redacts: str | None = None) -> NewEventRequest:
    return NewEventRequest(room_id=rid, type=type_, sender=A, content={"body": body}, device_id="DEV",
                           txn_id=txn, redacts=redacts)


def test_txn_key_scope() -> None:
    base = asdict(_msg("!a:x", "t1", "b"))
    assert txn_key(base) == txn_key(dict(base, content={"other": 1}))  # a retry: same key
    assert txn_key(base) != txn_key(dict(base, room_id="!b:x"))
    assert txn_key(base) != txn_key(dict(base, type="m.room.redaction", redacts="$e"))
    assert txn_key(dict(base, device_id=None)) is None
    assert txn_key(dict(base, txn_id=5)) is None


async def _rooms(processor: RoomInputProcessor, n: int) -> list[str]:
    out = []
    for _ in range(n):
        rid = random_room_id(SERVER)
        await processor.create(CreateRoomRequest(creator=A, room_version="11"), rid, None)
        out.append(rid)
    return out


async def test_same_txn_in_two_rooms_batched(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    r1, r2 = await _rooms(processor, 2)
    res = await processor.handle_batch([("new_event", asdict(_msg(r1, "t1", "one")), "q1"),
                                        ("new_event", asdict(_msg(r2, "t1", "two")), "q2")])
    e1, e2 = res[0]["event_id"], res[1]["event_id"]
    assert e1 != e2
    # A later batch: the retry in room 2 finds room 2's event, not room 1's.
    again = await processor.handle_batch([("new_event", asdict(_msg(r2, "t1", "two")), "q3"),
                                          ("new_event", asdict(_msg(r1, "t1", "one")), "q4")])
    assert [again[0]["event_id"], again[1]["event_id"]] == [e2, e1]
    rows = await store.db.fetch("SELECT event_id FROM events WHERE event_id IN ($1, $2)", e1, e2)
    assert len(rows) == 2


async def test_same_txn_in_two_rooms_single(processor: RoomInputProcessor) -> None:
    r1, r2 = await _rooms(processor, 2)
    e1 = await processor.send(_msg(r1, "t9", "one"))
    e2 = await processor.send(_msg(r2, "t9", "two"))
    assert e1 != e2
    assert await processor.send(_msg(r2, "t9", "two")) == e2
    red = await processor.send(_msg(r1, "t9", "", type_="m.room.redaction", redacts=e1))
    assert red not in (e1, e2)
