"""The roomserver's storage on SQLite and PostgreSQL: state snapshots as deltas."""
from __future__ import annotations

import json

from services.roomserver.api import CreateRoomRequest, NewEventRequest
from services.roomserver.create import random_room_id
from services.roomserver.input import RoomInputProcessor
from services.roomserver.state import MAX_CHAIN, NewSnapshot, plan_snapshot
from services.roomserver.storage.store import PersistBatch, RoomserverStore

from .conftest import SERVER

A = f"@alice:{SERVER}"


async def _room(p: RoomInputProcessor, version: str = "11") -> str:
    rid = random_room_id(SERVER)
    await p.create(CreateRoomRequest(creator=A, room_version=version, preset="public_chat"), rid, None)
    return rid


async def _msg(p: RoomInputProcessor, rid: str, body: str) -> str:
    return await p.send(NewEventRequest(room_id=rid, type="m.room.message", sender=A, content={"body": body}))


async def test_messages_create_no_snapshots(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = await _room(processor)
    room = await processor.room(rid)
    assert room is not None
    n0 = await store.count_snapshots(room.room_nid)
    snap0 = room.snapshot.nid
    for i in range(1000):
        await _msg(processor, rid, str(i))
    assert await store.count_snapshots(room.room_nid) == n0
    row = await store.room_row(rid)
    assert int(row["snapshot_nid"]) == snap0
    # Every message's state before and after is the room's one snapshot.
    n = await store.db.fetchval(
        "SELECT COUNT(*) FROM events WHERE room_nid = $1 AND before_snapshot_nid = $2 AND after_snapshot_nid = $2",
        room.room_nid, snap0,
    )
    assert int(n) == 1000


async def test_state_change_writes_one_small_delta(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = await _room(processor)
    room = await processor.room(rid)
    assert room is not None
    n0 = await store.count_snapshots(room.room_nid)
    eid = await processor.send(NewEventRequest(room_id=rid, type="m.room.topic", sender=A,
                                               content={"topic": "t"}, state_key=""))
    assert await store.count_snapshots(room.room_nid) == n0 + 1
    row = await store.db.fetchrow(
        "SELECT s.delta, s.parent_nid, e.before_snapshot_nid FROM events e"
        " JOIN state_snapshots s ON s.snapshot_nid = e.after_snapshot_nid WHERE e.event_id = $1", eid,
    )
    delta = json.loads(row[0])
    assert len(delta) == 1 and int(row[1]) == int(row[2])
    ev = await store.get_event_row(eid)
    assert ev is not None and delta[0][2] == ev.event_nid


async def test_chain_bounded_and_state_at_every_event(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = await _room(processor)
    expected: dict[str, dict[tuple[str, str], str]] = {}
    room = await processor.room(rid)
    assert room is not None
    for i in range(2 * MAX_CHAIN + 10):
        if i % 3 == 0:
            eid = await _msg(processor, rid, str(i))
        else:
            eid = await processor.send(NewEventRequest(
                room_id=rid, type="m.room.topic" if i % 2 else "org.example.state", sender=A,
                content={"n": i}, state_key="" if i % 2 else f"k{i % 5}",
            ))
        expected[eid] = {k: v[0] for k, v in room.state.items()}
    max_chain = await store.db.fetchval(
        "SELECT MAX(chain_len) FROM state_snapshots WHERE room_nid = $1", room.room_nid)
    assert int(max_chain) <= MAX_CHAIN
    bases = await store.db.fetchval(
        "SELECT COUNT(*) FROM state_snapshots WHERE room_nid = $1 AND parent_nid IS NULL", room.room_nid)
    assert int(bases) >= 2
    for eid, state in expected.items():
        row = await store.get_event_row(eid)
        assert row is not None
        nids = await store.load_snapshot(row.after_snapshot_nid)
        rows = await store.get_event_rows_by_nid(list(nids.values()))
        got = {(r.pdu["type"], r.pdu["state_key"]): r.event_id for r in rows}
        assert got == state
    # A fresh processor rebuilds the same view from the database.
    fresh = await store.load_room(rid)
    assert fresh is not None
    assert fresh.state == room.state and fresh.extremities == room.extremities
    assert fresh.snapshot == room.snapshot


async def test_same_state_is_stored_once(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = await _room(processor)
    room = await processor.room(rid)
    assert room is not None
    s1 = room.snapshot
    state1 = dict(room.nid_state)
    await processor.send(NewEventRequest(room_id=rid, type="m.room.topic", sender=A, content={"topic": "x"},
                                         state_key=""))
    assert room.snapshot.nid != s1.nid
    # Going back to exactly the earlier state (as a state reset would) finds the old row.
    changes = {k: state1.get(k) for k in room.nid_state if room.nid_state[k] != state1.get(k)}
    snap, _ = plan_snapshot(room.snapshot, room.nid_state, changes)
    assert isinstance(snap, NewSnapshot) and snap.hash == s1.hash
    n = await store.count_snapshots(room.room_nid)
    await store.persist(PersistBatch(room_nid=room.room_nid, events=[], current_snapshot=snap))
    assert snap.nid == s1.nid
    assert await store.count_snapshots(room.room_nid) == n


async def test_queries(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = await _room(processor)
    assert await store.joined_members(rid) == [A]
    assert await store.rooms_for_user(A, ("join",)) == [(rid, "join", (await store.membership(rid, A))[1])]
    assert await store.rooms_for_user(A, ("invite",)) == []
    assert await store.insert_alias("#a:hs", rid, A, 1) is True
    assert await store.insert_alias("#a:hs", rid, A, 1) is False
    assert await store.resolve_alias("#a:hs") == rid
    assert await store.aliases_for_room(rid) == ["#a:hs"]
    assert await store.delete_alias("#a:hs") is True
    assert await store.resolve_alias("#a:hs") is None
    assert await store.public_rooms() == []
    assert await store.set_visibility(rid, "public") is True
    assert await store.public_rooms() == [rid]
    assert await store.set_visibility("!nope:hs", "public") is False
    ev = await store.current_state_event(rid, "m.room.join_rules", "")
    assert ev is not None and ev.pdu["content"] == {"join_rule": "public"}
    assert await store.current_state_event(rid, "m.room.nope", "") is None
