"""Roomserver pieces after a database outage: a batch whose commit may have happened
without being reported gets its outbox rows published before the room goes on, and
the relay's sweep publishes committed rows it was never handed."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from libs.log.api import Record
from libs.storage import DatabaseUnavailable
from services.roomserver.consumers import InputConsumer, encode_input
from services.roomserver.producers import OutboxRelay


class _FlakyProcessor:
    """Fails the first batch with a database error (as when COMMIT's answer is lost)."""

    def __init__(self, log_: list[str]) -> None:
        self.log = log_
        self.calls = 0

    async def handle_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        self.calls += 1
        self.log.append(f"process{self.calls}")
        if self.calls == 1:
            raise DatabaseUnavailable("ConnectionDoesNotExistError: connection was closed in the middle of operation")
        return [{"event_id": "$e"} for _ in items]


class _Relay:
    def __init__(self, log_: list[str]) -> None:
        self.log = log_
        self.asked: list[Callable[[str], bool]] = []

    async def publish_unsent(self, owns_room: Callable[[str], bool]) -> int:
        self.log.append("publish_unsent")
        self.asked.append(owns_room)
        return 1


class _Replies:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def reply(self, _record: Any, value: bytes) -> bool:
        self.sent.append(value)
        return True


async def test_room_unsure_after_db_error_flushes_its_outbox_before_retrying() -> None:
    order: list[str] = []
    relay = _Relay(order)
    replies = _Replies()
    consumer = InputConsumer(_FlakyProcessor(order), replies, relay=relay)  # type: ignore[arg-type]
    rec = Record("roomserver.input", 0, 0, "!r:x", encode_input("new_event", {"txn_id": "t"}, "q0"))
    try:
        await consumer.handle_batch([rec])
        raise AssertionError("the database error must reach the runner (it retries)")
    except DatabaseUnavailable:
        pass
    await consumer.handle_batch([rec])  # the runner's retry
    assert order == ["process1", "publish_unsent", "process2"]
    owns = relay.asked[0]
    assert owns("!r:x") and not owns("!other:x")
    assert [json.loads(v) for v in replies.sent] == [{"event_id": "$e"}]
    await consumer.handle_batch([rec])  # healthy again: no more flushing
    assert order.count("publish_unsent") == 1


class _Store:
    def __init__(self) -> None:
        self.rows: dict[int, tuple[int, str, str, str]] = {}
        self.sent: set[int] = set()

    async def unsent_outbox(self, limit: int = 1000) -> list[tuple[int, str, str, str]]:
        return [r for n, r in sorted(self.rows.items()) if n not in self.sent][:limit]

    async def mark_sent(self, nids: list[int]) -> None:
        self.sent.update(nids)

    async def prune_outbox(self, keep_below: int) -> None:
        return None


class _Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, key: str, value: bytes, headers: Any = None) -> None:
        self.sent.append(value)


async def test_relay_sweep_publishes_rows_it_was_never_handed_once() -> None:
    store, producer = _Store(), _Producer()
    relay = OutboxRelay(store, producer, sweep_interval_s=0.05)  # type: ignore[arg-type]
    await relay.start()
    try:
        # Committed, but the relay never heard of it (the commit's success was lost).
        store.rows[1] = (1, "!r:x", "$lost", '{"e":"$lost"}')
        # Committed and handed over normally.
        store.rows[2] = (2, "!r:x", "$ok", '{"e":"$ok"}')
        relay.notify([store.rows[2]])
        for _ in range(100):
            if 1 in store.sent:
                break
            await asyncio.sleep(0.02)
        assert store.sent == {1, 2}
        await asyncio.sleep(0.2)  # more sweeps: nothing goes out twice
        assert sorted(producer.sent) == [b'{"e":"$lost"}', b'{"e":"$ok"}']
        assert relay.swept == 1
    finally:
        await relay.stop()
