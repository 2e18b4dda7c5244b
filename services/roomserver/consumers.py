"""The `roomserver.input` consumer: one worker per room (keyed runner), results
sent back on the request's reply address once the event is committed."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from libs.errors import bad_json
from libs.log.api import Record, TopicPartition, partition_for
from libs.log.reply import ReplySender
from libs.log.runner import KeyedRunner
from libs.storage.errors import DatabaseError

from services.roomserver.input import RoomInputProcessor, error_result

log = logging.getLogger(__name__)

HEADER_REQUEST_ID = "axon-request-id"


def encode_input(kind: str, body: dict[str, Any], request_id: str) -> bytes:
    return json.dumps({"kind": kind, "request_id": request_id, "body": body},
                      separators=(",", ":"), ensure_ascii=False).encode()


class InputConsumer:
    """With a `relay`: when a room's batch fails on a database error, the commit may
    have happened anyway (the connection died while COMMIT was under way), so its
    outbox rows were never handed to the relay. Before that room's next attempt the
    relay publishes the room's unsent rows: they go out, and before anything newer."""

    def __init__(self, processor: RoomInputProcessor, replies: ReplySender, relay: Any = None) -> None:
        self.processor = processor
        self.replies = replies
        self.relay = relay
        self._unsure: set[str] = set()  # rooms whose last batch died on a database error
        # Running totals for /metrics: input records answered, by outcome ("ok"/"error").
        self.outcomes: dict[str, int] = {"ok": 0, "error": 0}

    def _count(self, result: dict[str, Any]) -> None:
        self.outcomes["error" if isinstance(result.get("error"), dict) else "ok"] += 1

    async def handle_batch(self, records: list[Record]) -> None:
        """Every queued record of one room: processed (and committed) together,
        then each one's reply."""
        room_id = records[0].key if records else ""
        if self.relay is not None and room_id in self._unsure:
            await self.relay.publish_unsent(lambda r: r == room_id)
            self._unsure.discard(room_id)
        try:
            await self._handle_batch(records)
        except DatabaseError:
            if self.relay is not None:
                self._unsure.add(room_id)
            raise

    async def _handle_batch(self, records: list[Record]) -> None:
        items: list[tuple[str, dict[str, Any], str | None]] = []
        results: list[dict[str, Any] | None] = []
        for record in records:
            try:
                msg = json.loads(record.value)
                kind, body, request_id = msg["kind"], msg["body"], msg.get("request_id")
                if not isinstance(body, dict) or not isinstance(kind, str):
                    raise ValueError("bad input record")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                log.warning("malformed roomserver input record at %s/%d", record.tp, record.offset)
                results.append(error_result(bad_json("malformed input record")))
                continue
            items.append((kind, body, request_id if isinstance(request_id, str) else None))
            results.append(None)
        done = iter(await self.processor.handle_batch(items)) if items else iter(())
        answers: list[tuple[Record, bytes]] = []
        for record, result in zip(records, results):
            value = result if result is not None else next(done)
            self._count(value)
            answers.append((record, json.dumps(value, separators=(",", ":")).encode()))
        # All at once: the producer puts them in one request instead of one acks=all round
        # trip per reply, so the last caller of a batch does not wait for the others' acks.
        # (Replies carry their own correlation IDs; their order does not matter.)
        sent = await asyncio.gather(*(self.replies.reply(r, v) for r, v in answers), return_exceptions=True)
        failed = next((e for e in sent if isinstance(e, BaseException)), None)
        if failed is not None:
            raise failed  # the runner retries the records one by one; their results are stored

    async def handle(self, record: Record) -> None:
        try:
            msg = json.loads(record.value)
            kind, body, request_id = msg["kind"], msg["body"], msg.get("request_id")
            if not isinstance(body, dict) or not isinstance(kind, str):
                raise ValueError("bad input record")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            log.warning("malformed roomserver input record at %s/%d", record.tp, record.offset)
            result = error_result(bad_json("malformed input record"))
        else:
            result = await self.processor.handle(kind, body, request_id if isinstance(request_id, str) else None)
        self._count(result)
        await self.replies.reply(record, json.dumps(result, separators=(",", ":")).encode())


class RevokeAwareListener:
    """Wraps the runner's rebalance hooks: rooms of partitions we lose may be
    written by another replica, so their cached state is dropped.

    With a relay (replicas sharing one outbox): before giving rooms up, what we
    committed for them is published (bounded wait), so the next owner's events
    cannot overtake ours on roomserver.output; on assignment, rows a dead previous
    owner committed but never published go out before we write those rooms."""

    def __init__(self, runner: KeyedRunner, processor: RoomInputProcessor, relay: Any = None,
                 partitions_count: Callable[[], Awaitable[int]] | None = None,
                 flush_timeout_s: float = 10.0) -> None:
        self.runner = runner
        self.processor = processor
        self.relay = relay
        self.partitions_count = partitions_count
        self.flush_timeout_s = flush_timeout_s

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await self.runner.on_revoked(partitions)
        self.processor.forget_all_rooms()
        if self.relay is not None and partitions:
            try:
                await asyncio.wait_for(self.relay.wait_idle(), self.flush_timeout_s)
            except asyncio.TimeoutError:
                log.warning("outbox not drained within %.0fs of a revocation", self.flush_timeout_s)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.processor.forget_all_rooms()
        if self.relay is not None and self.partitions_count is not None and partitions:
            n = await self.partitions_count()
            owned = {p for _t, p in partitions}
            await self.relay.publish_unsent(lambda room_id: partition_for(room_id, n) in owned)
        await self.runner.on_assigned(partitions)
