"""The roomserver service end to end on the embedded log: input consumer, replies,
outbox relay (including a crash between commit and publish), parallel rooms."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from libs.config import DatabaseConfig, HomeserverConfig
from libs.errors import MatrixError
from libs.log.api import EventLog
from libs.log.embedded import EmbeddedLog
from libs.storage import Database

from services.roomserver.api import TOPIC_OUTPUT, CreateRoomRequest, NewEventRequest
from services.roomserver.service import RoomserverService

from .conftest import SERVER

A, B = f"@alice:{SERVER}", f"@bob:{SERVER}"


@pytest.fixture
async def elog(tmp_path) -> AsyncIterator[EventLog]:
    lg = EmbeddedLog(str(tmp_path / "log.sqlite3"))
    await lg.start()
    yield lg
    await lg.stop()


def _service(db: Database, lg: EventLog, signing_key, **kw) -> RoomserverService:
    return RoomserverService(HomeserverConfig(server_name=SERVER), db, lg, signing_key=signing_key, **kw)


async def _read_output(lg: EventLog, want: int, group: str = "reader", timeout_s: float = 10.0) -> list[dict]:
    consumer = lg.consumer(group, [TOPIC_OUTPUT])
    await consumer.start()
    out: list[dict] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while len(out) < want and asyncio.get_running_loop().time() < deadline:
            for rec in await consumer.getmany(timeout_ms=200):
                out.append(json.loads(rec.value))
        # Anything more that is already there (duplicates) too.
        for rec in await consumer.getmany(timeout_ms=200):
            out.append(json.loads(rec.value))
    finally:
        await consumer.stop()
    return out


def _dedup(records: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for r in records:
        if r["event"]["event_id"] not in seen:
            seen.add(r["event"]["event_id"])
            out.append(r)
    return out


async def test_send_and_output(db: Database, elog: EventLog, signing_key) -> None:
    svc = _service(db, elog, signing_key)
    await svc.start()
    try:
        rid = await svc.api.create_room(CreateRoomRequest(creator=A, room_version="11", preset="public_chat",
                                                          name="n"))
        e1 = (await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.message", sender=A,
                                                       content={"body": "1"}, device_id="D", txn_id="t"))).event_id
        # Committed before the reply: readable at once.
        assert (await svc.api.get_event(e1))["content"] == {"body": "1"}
        again = await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.message", sender=A,
                                                         content={"body": "1"}, device_id="D", txn_id="t"))
        assert again.event_id == e1
        with pytest.raises(MatrixError) as ei:
            await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.message", sender=B, content={}))
        assert ei.value.errcode == "M_FORBIDDEN" and ei.value.status == 403
        await svc.relay.wait_idle()
        out = await _read_output(elog, 7)
        assert [o["event"]["type"] for o in out] == [
            "m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules",
            "m.room.history_visibility", "m.room.name", "m.room.message"]
        # Each record names the previous one of its room (gap detection).
        assert out[0]["last_sent_event_id"] is None
        for prev, cur in zip(out, out[1:]):
            assert cur["last_sent_event_id"] == prev["event"]["event_id"]
        assert out[-1]["txn_id"] == "t" and out[-1]["device_id"] == "D"
        assert out[-1]["state_added"] == [] and out[1]["state_added"] == [out[1]["event"]["event_id"]]
        assert all(o["event"]["room_id"] == rid for o in out)
        # Queries.
        assert await svc.api.get_joined_members(rid) == [A]
        assert [m.room_id for m in await svc.api.get_rooms_for_user(A)] == [rid]
        assert (await svc.api.get_membership(rid, A)).membership == "join"
        assert (await svc.api.get_state_event(rid, "m.room.name", ""))["content"] == {"name": "n"}
        state_at = await svc.api.get_state_at_event(out[2]["event"]["event_id"])
        assert sorted(state_at) == [("m.room.create", ""), ("m.room.member", A), ("m.room.power_levels", "")]
        before = await svc.api.get_state_before_event(out[2]["event"]["event_id"])
        assert sorted(before) == [("m.room.create", ""), ("m.room.member", A)]
        assert await svc.api.get_room_version(rid) == "11" and await svc.api.room_exists(rid)
        assert await svc.api.set_alias("#x:" + SERVER, rid, A) is True
        assert await svc.api.set_alias("#x:" + SERVER, rid, A) is False
        assert await svc.api.get_aliases(rid) == ["#x:" + SERVER]
        await svc.api.set_room_visibility(rid, "public")
        assert await svc.api.list_public_rooms() == [rid]
        with pytest.raises(MatrixError):
            await svc.api.get_room_visibility("!nope:x")
        assert set(await svc.api.get_events([e1, "$missing"])) == {e1}
    finally:
        await svc.stop()


async def test_outbox_republish_after_crash(db: Database, elog: EventLog, signing_key) -> None:
    # Relay "killed": events are committed, nothing is published.
    svc = _service(db, elog, signing_key, start_relay=False)
    await svc.start()
    rid = await svc.api.create_room(CreateRoomRequest(creator=A, room_version="10"))
    sent = [(await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.message", sender=A,
                                                      content={"body": str(i)}))).event_id for i in range(5)]
    await svc.stop()
    # create, join, power levels, join rules, history visibility, guest access + 5 messages
    assert len(await svc.store.unsent_outbox()) == 11

    # Crash after publishing part but before marking: publish 3 rows by hand, unmarked.
    rows = await svc.store.unsent_outbox()
    for _nid, room_id, _eid, record in rows[:3]:
        await elog.producer().send(TOPIC_OUTPUT, room_id, record.encode())

    svc2 = _service(db, elog, signing_key)
    await svc2.start()
    await svc2.relay.wait_idle()
    await svc2.stop()
    assert await svc2.store.unsent_outbox() == []
    out = await _read_output(elog, 14)
    assert len(out) == 14  # 3 duplicates
    unique = _dedup(out)
    ids = [o["event"]["event_id"] for o in unique]
    assert len(ids) == 11 and ids[-5:] == sent
    for prev, cur in zip(unique, unique[1:]):
        assert cur["last_sent_event_id"] == prev["event"]["event_id"]


async def test_rooms_do_not_block_each_other(db: Database, elog: EventLog, signing_key) -> None:
    svc = _service(db, elog, signing_key)
    await svc.start()
    try:
        slow = await svc.api.create_room(CreateRoomRequest(creator=A, room_version="11"))
        fast = await svc.api.create_room(CreateRoomRequest(creator=A, room_version="11"))
        gate = asyncio.Event()
        original = svc.processor.send_batch

        async def gated(items):
            if any(body["room_id"] == slow for body, _rid in items):
                await gate.wait()
            return await original(items)

        svc.processor.send_batch = gated  # type: ignore[method-assign]
        blocked = asyncio.create_task(svc.api.send_event(
            NewEventRequest(room_id=slow, type="m.room.message", sender=A, content={"body": "s"})))
        await asyncio.sleep(0.05)
        # The other room goes on while the first room's worker is stuck.
        done = await asyncio.wait_for(svc.api.send_event(
            NewEventRequest(room_id=fast, type="m.room.message", sender=A, content={"body": "f"})), 5)
        assert done.event_id and not blocked.done()
        gate.set()
        assert (await asyncio.wait_for(blocked, 5)).event_id
    finally:
        await svc.stop()


async def test_v12_end_to_end(db: Database, elog: EventLog, signing_key) -> None:
    svc = _service(db, elog, signing_key)
    await svc.start()
    try:
        rid = await svc.api.create_room(CreateRoomRequest(creator=A, room_version="12", preset="trusted_private_chat",
                                                          invite=[B]))
        assert rid.startswith("!") and ":" not in rid
        create = await svc.api.get_state_event(rid, "m.room.create", "")
        assert create is not None and rid == "!" + create["event_id"][1:]
        assert create["content"]["additional_creators"] == [B]
        j = await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.member", sender=B, state_key=B,
                                                     content={"membership": "join"}))
        assert sorted(await svc.api.get_joined_members(rid)) == sorted([A, B])
        # Bob is a creator: he may change power levels.
        await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.power_levels", sender=B, state_key="",
                                                 content={"users": {}, "state_default": 0}))
        ev = await svc.api.get_event(j.event_id)
        assert ev is not None and ev["room_id"] == rid and "$" + rid[1:] not in ev["auth_events"]
    finally:
        await svc.stop()


async def test_concurrent_senders_many_rooms(db: Database, elog: EventLog, signing_key) -> None:
    svc = _service(db, elog, signing_key)
    await svc.start()
    try:
        rooms = [await svc.api.create_room(CreateRoomRequest(creator=A, room_version="11")) for _ in range(4)]

        async def burst(rid: str, n: int) -> list[str]:
            return [(await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.message", sender=A,
                                                              content={"n": i}))).event_id for i in range(n)]

        results = await asyncio.gather(*(burst(r, 10) for r in rooms))
        for rid, ids in zip(rooms, results):
            room = await svc.processor.room(rid)
            assert room is not None and list(room.extremities) == [ids[-1]]
            depths = [(await svc.api.get_event(e))["depth"] for e in ids]
            assert depths == sorted(depths) and len(set(depths)) == 10
    finally:
        await svc.stop()
