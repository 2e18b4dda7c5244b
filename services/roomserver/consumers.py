"""The `roomserver.input` consumer: one worker per room (keyed runner), results
sent back on the request's reply address once the event is committed."""
from __future__ import annotations

import json
import logging
from typing import Any

from libs.errors import bad_json
from libs.log.api import Record, TopicPartition
from libs.log.reply import ReplySender
from libs.log.runner import KeyedRunner

from services.roomserver.input import RoomInputProcessor, error_result

log = logging.getLogger(__name__)

HEADER_REQUEST_ID = "axon-request-id"


def encode_input(kind: str, body: dict[str, Any], request_id: str) -> bytes:
    return json.dumps({"kind": kind, "request_id": request_id, "body": body},
                      separators=(",", ":"), ensure_ascii=False).encode()


class InputConsumer:
    def __init__(self, processor: RoomInputProcessor, replies: ReplySender) -> None:
        self.processor = processor
        self.replies = replies

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
        await self.replies.reply(record, json.dumps(result, separators=(",", ":")).encode())


class RevokeAwareListener:
    """Wraps the runner's rebalance hooks: rooms of partitions we lose may be
    written by another replica, so their cached state is dropped."""

    def __init__(self, runner: KeyedRunner, processor: RoomInputProcessor) -> None:
        self.runner = runner
        self.processor = processor

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await self.runner.on_revoked(partitions)
        self.processor.forget_all_rooms()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.processor.forget_all_rooms()
        await self.runner.on_assigned(partitions)
