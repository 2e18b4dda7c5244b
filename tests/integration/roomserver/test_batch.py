"""Batched input: every queued input of a room is built in order and committed
in one transaction; every request gets its own result; redelivery after a crash
between the batch commit and the replies changes nothing."""
from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

from libs.config import HomeserverConfig
from libs.log.embedded import EmbeddedLog
from libs.storage import Database

from services.roomserver.api import CreateRoomRequest, NewEventRequest
from services.roomserver.create import random_room_id
from services.roomserver.input import RoomInputProcessor, txn_key
from services.roomserver.service import RoomserverService
from services.roomserver.storage.store import RoomserverStore

from .conftest import SERVER
from .test_processor import _all_events, _check_chain

A, B = f"@alice:{SERVER}", f"@bob:{SERVER}"


def _msg(rid: str, sender: str, body: str, txn: str | None = None) -> dict[str, Any]:
    return asdict(NewEventRequest(room_id=rid, type="m.room.message", sender=sender,
                                  content={"body": body}, device_id="DEV" if txn else None, txn_id=txn))


async def _count_events(store: RoomserverStore) -> int:
    return int(await store.db.fetchval("SELECT COUNT(*) FROM events"))


async def test_batch_in_order_one_transaction_result_per_input(
    processor: RoomInputProcessor, store: RoomserverStore, signing_key
) -> None:
    rid = random_room_id(SERVER)
    await processor.create(CreateRoomRequest(creator=A, room_version="11"), rid, None)
    persists = 0
    original = store.persist

    async def counting(batch):  # type: ignore[no-untyped-def]
        nonlocal persists
        persists += 1
        return await original(batch)

    store.persist = counting  # type: ignore[method-assign]
    items: list[tuple[str, dict[str, Any], str | None]] = []
    for i in range(20):
        items.append(("new_event", _msg(rid, A, f"m{i}", txn=f"t{i}"), f"req{i}"))
    items.insert(5, ("new_event", _msg(rid, B, "not a member"), "req-bob"))  # M_FORBIDDEN
    items.insert(9, ("new_event", _msg(rid, A, "again", txn="t2"), "req-dup"))  # same txn as m2
    items.insert(12, ("new_event", {"room_id": rid}, "req-bad"))  # malformed body
    results = await processor.handle_batch(items)
    assert persists == 1
    assert len(results) == len(items)
    by_req = {it[2]: res for it, res in zip(items, results)}
    assert by_req["req-bob"]["error"]["errcode"] == "M_FORBIDDEN"
    assert by_req["req-bad"]["error"]["errcode"] == "M_BAD_JSON"
    assert by_req["req-dup"] == by_req["req2"]
    sent = [by_req[f"req{i}"]["event_id"] for i in range(20)]
    assert len(set(sent)) == 20
    events = await _all_events(store, rid)
    _check_chain(events, signing_key)  # each event built on the previous one, signed, allowed
    assert [e.event_id for e in events[-20:]] == sent
    assert [e.content["body"] for e in events[-20:]] == [f"m{i}" for i in range(20)]


async def test_redelivered_batch_after_crash_before_reply_changes_nothing(
    db: Database, store: RoomserverStore, signing_key
) -> None:
    p1 = RoomInputProcessor(store, SERVER, signing_key)
    rid = random_room_id(SERVER)
    await p1.create(CreateRoomRequest(creator=A, room_version="10"), rid, None)
    items = [("new_event", _msg(rid, A, f"m{i}", txn=f"t{i}"), f"req{i}") for i in range(10)]
    first = await p1.handle_batch(items)
    before = await _count_events(store)
    # "Crash": the batch is committed but nobody saw the replies; a fresh process
    # (empty caches) gets the same records again, plus a client retry of t3 under
    # a new request ID, and new work after them.
    p2 = RoomInputProcessor(RoomserverStore(db), SERVER, signing_key)
    retry = [*items, ("new_event", _msg(rid, A, "m3", txn="t3"), "req-retry"),
             ("new_event", _msg(rid, A, "new", txn="t-new"), "req-new")]
    second = await p2.handle_batch(retry)
    assert second[:10] == first
    assert second[10] == first[3]
    assert "event_id" in second[11] and second[11]["event_id"] not in {r["event_id"] for r in first}
    assert await _count_events(store) == before + 1
    bodies = [e.content["body"] for e in (await _all_events(store, rid)) if e.type == "m.room.message"]
    assert bodies == [f"m{i}" for i in range(10)] + ["new"]


async def test_failed_commit_forgets_the_staged_view(
    processor: RoomInputProcessor, store: RoomserverStore, signing_key
) -> None:
    rid = random_room_id(SERVER)
    await processor.create(CreateRoomRequest(creator=A, room_version="11"), rid, None)
    original = store.persist

    async def boom(batch):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    store.persist = boom  # type: ignore[method-assign]
    try:
        await processor.handle_batch([("new_event", _msg(rid, A, "lost"), "r0")])
        raise AssertionError("expected the commit failure to propagate")
    except RuntimeError:
        pass
    store.persist = original  # type: ignore[method-assign]
    res = await processor.handle_batch([("new_event", _msg(rid, A, "kept"), "r1")])
    assert "event_id" in res[0]
    events = await _all_events(store, rid)
    _check_chain(events, signing_key)  # no gap: the lost event is not a prev_event
    assert events[-1].content["body"] == "kept"


async def test_service_concurrent_senders_one_room_all_replied_in_order(
    db: Database, tmp_path, signing_key
) -> None:
    lg = EmbeddedLog(str(tmp_path / "log.sqlite3"), fsync=False)
    await lg.start()
    svc = RoomserverService(HomeserverConfig(server_name=SERVER), db, lg, signing_key=signing_key)
    await svc.start()
    try:
        rid = await svc.api.create_room(CreateRoomRequest(creator=A, room_version="11"))
        sent: dict[int, list[str]] = {s: [] for s in range(5)}

        async def sender(s: int) -> None:
            for k in range(12):
                res = await svc.api.send_event(NewEventRequest(
                    room_id=rid, type="m.room.message", sender=A, content={"body": f"{s}:{k}"},
                    device_id=f"D{s}", txn_id=f"{k}"))
                sent[s].append(res.event_id)

        await asyncio.wait_for(asyncio.gather(*(sender(s) for s in range(5))), 30)
        events = await _all_events(svc.store, rid)
        _check_chain(events, signing_key)
        msgs = [e for e in events if e.type == "m.room.message"]
        assert len(msgs) == 60
        for s in range(5):
            mine = [e.event_id for e in msgs if e.content["body"].startswith(f"{s}:")]
            assert mine == sent[s]  # each sender's events in its send order
            assert [int(e.content["body"].split(":")[1]) for e in msgs
                    if e.content["body"].startswith(f"{s}:")] == list(range(12))
        await svc.relay.wait_idle()
        outbox = await db.fetchval("SELECT COUNT(*) FROM outbox WHERE sent = FALSE")
        assert int(outbox) == 0
        assert json.loads(json.dumps(svc.runner.stats().processed)) >= 61  # type: ignore[union-attr]
    finally:
        await svc.stop()
        await lg.stop()


async def test_prior_outcomes_in_one_lookup_and_room_version_cache(
    db: Database, processor: RoomInputProcessor, store: RoomserverStore, signing_key
) -> None:
    from services.roomserver.internal import RoomserverInternal

    rid = random_room_id(SERVER)
    await processor.create(CreateRoomRequest(creator=A, room_version="11"), rid, None)
    res = await processor.handle_batch([("new_event", _msg(rid, A, "x", txn="t1"), "q1")])
    k1, k2 = txn_key(_msg(rid, A, "x", txn="t1")), txn_key(_msg(rid, A, "x", txn="t2"))
    assert k1 is not None and k2 is not None
    results, txns = await store.get_prior_outcomes(["q1", "nope"], [k1, k2])
    assert results == {"q1": res[0]}
    assert txns == {k1: res[0]["event_id"]}
    assert await store.get_prior_outcomes([], []) == ({}, {})
    api = RoomserverInternal(store, SERVER, signing_key, None, None)  # type: ignore[arg-type]
    assert await api.room_exists(rid) and not await api.room_exists("!nope:" + SERVER)
    calls = 0
    original = store.room_row

    async def counting(room_id: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await original(room_id)

    store.room_row = counting  # type: ignore[method-assign]
    assert await api.room_exists(rid) and await api.get_room_version(rid) == "11"
    assert calls == 0  # known rooms are answered from memory
    assert not await api.room_exists("!nope:" + SERVER)
    assert calls == 1  # unknown ones are asked every time (the room may be created later)
