"""`RoomserverService`: the roomserver's wiring (store, input consumer, outbox relay).

    svc = RoomserverService(config, db, log)          # db opened with MIGRATIONS_PACKAGE
    await svc.start()   # publishes leftover outbox rows, then consumes roomserver.input
    event_id = (await svc.api.send_event(NewEventRequest(...))).event_id
    await svc.stop()
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter

from libs.config import HomeserverConfig
from libs.events.signing import SigningKey, parse_signing_key_file
from libs.log.api import EventLog, TopicSpec
from libs.log.reply import InProcessReplies, LogReplies, ReplyChannel, ReplySender
from libs.log.runner import KeyedRunner, RunnerConfig
from libs.metrics import ServiceMetrics
from libs.storage import Database

from services.roomserver.api import TOPIC_INPUT, TOPIC_OUTPUT, MissingEventsFetcher
from services.roomserver.consumers import InputConsumer, RevokeAwareListener
from services.roomserver.input import RoomInputProcessor
from services.roomserver.internal import RoomserverInternal
from services.roomserver.producers import OutboxRelay
from services.roomserver.storage.store import MIGRATIONS_PACKAGE, RoomserverStore

log = logging.getLogger(__name__)

INPUT_PARTITIONS = 8
OUTPUT_PARTITIONS = 8
CONSUMER_GROUP = "roomserver"


def load_signing_key(path: str) -> SigningKey:
    with open(path, encoding="utf-8") as f:
        return parse_signing_key_file(f.read())[0]


class RoomserverService:
    migrations_package = MIGRATIONS_PACKAGE

    def __init__(
        self,
        config: HomeserverConfig,
        db: Database,
        log: EventLog,
        *,
        signing_key: SigningKey | None = None,
        replies: ReplyChannel | None = None,
        runner_config: RunnerConfig | None = None,
        start_relay: bool = True,
        missing_events: MissingEventsFetcher | None = None,
        **_other_apis: Any,
    ) -> None:
        self.config = config
        self.db = db
        self.log = log
        self.signing_key = signing_key or load_signing_key(config.signing_key_path)
        if replies is None:
            replies = (
                InProcessReplies() if config.log.kind == "embedded"
                else LogReplies(log, f"roomserver-{uuid.uuid4().hex[:12]}")
            )
        self.replies = replies
        self.store = RoomserverStore(db)
        producer = log.producer()
        self.relay = OutboxRelay(self.store, producer)
        self.processor = RoomInputProcessor(
            self.store, config.server_name, self.signing_key,
            on_committed=self.relay.notify if start_relay else None,
            missing_events=missing_events,
        )
        self._start_relay = start_relay
        self.api = RoomserverInternal(
            self.store, config.server_name, self.signing_key, producer, replies
        )
        self.input = InputConsumer(
            self.processor,
            ReplySender(producer, local=replies if isinstance(replies, InProcessReplies) else None),
            relay=self.relay if start_relay else None,
        )
        # Batches: every input queued for a room is committed in one transaction.
        self._runner_config = runner_config or RunnerConfig(max_in_flight=256, max_batch=100)
        self.runner: KeyedRunner | None = None
        self.routers: list[APIRouter] = []
        self.readiness_checks: list[Callable[[], Awaitable[bool]]] = [self._db_ready, self._consumer_ready]

    async def start(self) -> None:
        await self.log.ensure_topics([
            TopicSpec(TOPIC_INPUT, INPUT_PARTITIONS),
            TopicSpec(TOPIC_OUTPUT, OUTPUT_PARTITIONS),
        ])
        await self.replies.start()
        if self._start_relay:
            await self.relay.start()
        consumer = self.log.consumer(CONSUMER_GROUP, [TOPIC_INPUT])
        self.runner = KeyedRunner(consumer, batch_handler=self.input.handle_batch, config=self._runner_config,
                                  name="roomserver-input")
        consumer.set_rebalance_listener(RevokeAwareListener(
            self.runner, self.processor, self.relay if self._start_relay else None,
            lambda: self.log.partitions_for(TOPIC_INPUT)))
        await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self._start_relay:
            await self.relay.stop()
        await self.replies.stop()

    def register_metrics(self, metrics: ServiceMetrics) -> None:
        """This replica's work counters on its /metrics (read at scrape time)."""
        metrics.callback_counter(
            "axon_roomserver_input_events_total",
            "roomserver.input records answered by this replica (events sent, rooms created), by outcome",
            lambda: {(k,): v for k, v in self.input.outcomes.items()}, ["outcome"])
        metrics.callback_counter(
            "axon_roomserver_outbox_published_total",
            "Outbox rows this replica published to roomserver.output",
            lambda: {(): self.relay.published})

    async def _db_ready(self) -> bool:
        try:
            await self.db.ping()
            return True
        except Exception:
            return False

    async def _consumer_ready(self) -> bool:
        return self.runner is not None and bool(self.runner.consumer.assignment())
