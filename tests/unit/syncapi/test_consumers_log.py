"""The consumers end to end over the embedded log: records produced on the topics
reach /sync, and a replay of the whole log (new consumer group) changes nothing."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from libs.log.embedded import EmbeddedLog
from services.syncapi.api import (
    TOPIC_RECEIPTS,
    TOPIC_ROOMSERVER_OUTPUT,
    TOPIC_TO_DEVICE,
    TOPIC_TYPING,
    ReceiptRecord,
    ToDeviceRecord,
    TypingRecord,
)
from services.syncapi.consumers import SyncConsumers
from services.syncapi.sync import SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, Harness

A, B = "@alice:test.local", "@bob:test.local"


def enc(obj: Any) -> bytes:
    return json.dumps(dataclasses.asdict(obj)).encode()


async def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_topics_to_sync_and_replay_is_idempotent(h: Harness, tmp_path: Any) -> None:
    log = EmbeddedLog(str(tmp_path / "log.sqlite3"))
    await log.start()
    try:
        consumers = SyncConsumers(log, h.projector, group_prefix="sync1")
        await consumers.start()
        prod = log.producer()
        room = FakeRoom("!log:test.local")
        recs = room.create(A) + [room.join(B)] + [room.msg(A, f"l{i}") for i in range(5)]
        await prod.send(TOPIC_ROOMSERVER_OUTPUT, "!junk", b"not json")  # poison: skipped, never crashes
        for rec in recs:
            await prod.send(TOPIC_ROOMSERVER_OUTPUT, room.room_id, enc(rec))
        await prod.send(TOPIC_TYPING, room.room_id, enc(TypingRecord(room.room_id, A, True, 30000)))
        await prod.send(TOPIC_RECEIPTS, room.room_id, enc(ReceiptRecord(room.room_id, A, "m.read", room.last[-1], 9)))
        await prod.send(TOPIC_TO_DEVICE, B, enc(ToDeviceRecord(A, "m.t", B, "DEV", {"k": "v"}, "m1")))

        async def done() -> bool:
            resp, _ = await h.engine.build(SyncRequest(B, "DEV"))
            jr = resp["rooms"]["join"].get(room.room_id)
            return bool(jr) and jr["timeline"]["events"][-1]["event_id"] == room.last[-1] and len(jr["ephemeral"]["events"]) == 2 \
                and bool(resp["to_device"]["events"])

        await wait_for(done)
        before = await h.store.positions()
        await consumers.stop()
        # A second group reads everything from the start: nothing changes.
        replay = SyncConsumers(log, h.projector, group_prefix="sync2")
        await replay.start()
        await asyncio.sleep(0.3)
        await replay.stop()
        assert await h.store.positions() == before
        resp, _ = await h.engine.build(SyncRequest(B, "DEV"))
        assert [e["event_id"] for e in resp["rooms"]["join"][room.room_id]["timeline"]["events"]] == room.last[-10:]
    finally:
        await log.stop()


def test_malformed_records_are_rejected_not_crashing() -> None:
    import pytest as _pytest

    from services.syncapi.consumers import parse_client_data, parse_output, parse_receipt, parse_to_device, parse_typing
    bad = [None, [], "x", {}, {"room_id": 1, "user_id": "@a:b", "typing": True}, {"event": "nope"},
           {"room_id": "!r", "user_id": "@a", "typing": "yes", "timeout_ms": 1},
           {"room_id": "!r", "user_id": "@a", "receipt_type": "m.read", "event_id": "$e", "ts": True},
           {"sender": "@a", "type": "t", "user_id": "@b", "device_id": "D", "content": [], "message_id": "m"}]
    for parser in (parse_typing, parse_receipt, parse_to_device, parse_client_data, parse_output):
        for obj in bad:
            try:
                if parser(obj) is None and parser is parse_output:
                    continue  # not an event record: ignored
            except (TypeError, ValueError):
                continue
            _pytest.fail(f"{parser.__name__} accepted {obj!r}")
