"""`SyncService`: wires the syncapi's store, projection, consumers, engine and routes."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter

from libs.config.model import HomeserverConfig
from libs.log.api import EventLog
from libs.metrics import ServiceMetrics
from libs.storage import Database
from services.roomserver.api import RoomserverAPI
from services.syncapi.activity import SyncActivity
from services.syncapi.backfill import HistoryBackfill
from services.syncapi.broadcast import PgPositionListener
from services.syncapi.consumers import SyncConsumers, SyncProjector
from services.syncapi.history import History
from services.syncapi.internal import SyncInternal
from services.syncapi.legacy import build_legacy_routers
from services.syncapi.presence import PresenceConsumer, PresenceRecord, PresenceState, PresenceTracker
from services.syncapi.routes import AuthDependency, build_routers
from services.syncapi.storage.store import SyncStore
from services.syncapi.userdir import UserDirectory, build_userdir_routers
from services.syncapi.streams import Notifier, Positions, TypingState
from services.syncapi.sync import SyncEngine
from services.userapi.api import UserAPI


def _now_ms() -> int:
    return int(time.time() * 1000)


class SyncService:
    """`db` must have the syncapi migrations applied
    (``open_database(config.database, "syncapi", MIGRATIONS_PACKAGE)``)."""

    def __init__(self, config: HomeserverConfig, db: Database, log: EventLog | None, *,
                 roomserver: RoomserverAPI, userapi: UserAPI, auth: AuthDependency | None = None,
                 clock_ms: Callable[[], int] = _now_ms, instance_id: str | None = None) -> None:
        self.config = config
        self.db = db
        self.log = log
        self.store = SyncStore(db)
        self.positions = Positions()
        self.notifier = Notifier()
        self.typing = TypingState(clock_ms=clock_ms)
        self.presence = PresenceState()
        self.activity = SyncActivity()
        self.projector = SyncProjector(self.store, self.positions, self.notifier, self.typing, roomserver, userapi,
                                       activity=self.activity)
        self.engine = SyncEngine(self.store, self.positions, self.notifier, self.typing, clock_ms=clock_ms,
                                 presence=self.presence, activity=self.activity)
        self.history = History(self.store, self.positions, clock_ms=clock_ms,
                               backfill=HistoryBackfill(self.store, roomserver) if config.federation.enabled else None)
        self.api = SyncInternal(self.store, self.engine, self.notifier, activity=self.activity)
        if auth is None:
            from services.userapi.client_auth import ClientAuth
            auth = ClientAuth(userapi, config).require(allow_guest=True)
        self.routers: list[APIRouter] = build_routers(self.engine, self.history, userapi, auth,
                                                      presence=PresenceTracker(self.presence, userapi,
                                                                               apply=self._apply_presence))
        self.routers += build_legacy_routers(self.engine, auth)
        self.routers += build_userdir_routers(UserDirectory(db), auth)
        self.consumers = SyncConsumers(log, self.projector, instance_id=instance_id) if log is not None else None
        self.presence_consumer = (
            PresenceConsumer(log, self.presence, self.store, self.notifier, instance_id=self.consumers.instance_id)
            if log is not None and self.consumers is not None else None)
        self.readiness_checks: list[Callable[[], Awaitable[bool]]] = [self._db_ready]
        if self.consumers is not None:
            self.readiness_checks.append(self._consumer_ready)
        self._typing_task: asyncio.Task[Any] | None = None
        # Other replicas' writes advance our positions and wake our long-polls.
        self.position_listener = PgPositionListener(db, self.positions, self.notifier, self.activity,
                                                    on_reconnect=self._after_relisten)

    async def _apply_presence(self, rec: PresenceRecord) -> None:
        if self.presence_consumer is not None:
            await self.presence_consumer.apply(rec)
        else:
            self.presence.set(rec)

    def register_metrics(self, metrics: ServiceMetrics) -> None:
        """This replica's work counters on its /metrics (read at scrape time)."""
        metrics.callback_counter(
            "axon_syncapi_events_projected_total",
            "roomserver.output events this replica wrote into the projection",
            lambda: {(): self.projector.events_projected})
        metrics.callback_counter(
            "axon_syncapi_wakeups_total",
            "Waiting listeners woken: sync = /sync (and /events) long-polls, wait_event = read-your-writes waits",
            lambda: {(k,): v for k, v in self.notifier.woken.items()}, ["kind"])

    async def _db_ready(self) -> bool:
        try:
            await self.db.ping()
            return True
        except Exception:
            return False

    async def _consumer_ready(self) -> bool:
        return self.consumers is not None and self.consumers.output_assigned()

    async def load_positions(self) -> None:
        pos = await self.store.positions()
        for stream, value in pos.items():
            if hasattr(self.positions, stream):
                self.positions.advance(stream, value)

    async def _after_relisten(self) -> None:
        """The LISTEN connection was lost and is back: announcements of other replicas
        in between are gone, so positions are re-read and the in-memory activity
        restarts from here (older questions go to the database); every long-poll
        wakes up to look again."""
        pos = await self.store.positions()
        for stream, value in pos.items():
            if hasattr(self.positions, stream):
                self.positions.advance(stream, value)
        self.activity.start(max(self.positions.events, self.activity.floor or 0))
        self.activity.invalidate_all()
        self.notifier.notify_all()

    async def start(self) -> None:
        await self.position_listener.start()  # before loading: no announcement falls in between
        await self.load_positions()
        self.activity.start(self.positions.events)  # (from here on every event is noted)
        if self.consumers is not None:
            await self.consumers.start()
        if self.presence_consumer is not None:
            await self.presence_consumer.start()
        self._typing_task = asyncio.create_task(self._typing_expiry(), name="syncapi-typing-expiry")

    async def stop(self) -> None:
        if self._typing_task is not None:
            self._typing_task.cancel()
            try:
                await self._typing_task
            except asyncio.CancelledError:
                pass
            self._typing_task = None
        if self.presence_consumer is not None:
            await self.presence_consumer.stop()
        if self.consumers is not None:
            await self.consumers.stop()
        await self.position_listener.stop()

    async def _typing_expiry(self) -> None:
        # Sleeps until the next typing timeout (at most 1 s, so new typers are picked up).
        while True:
            nxt = self.typing.next_expiry_ms()
            delay = 1.0 if nxt is None else min(1.0, max(0.01, (nxt - self.typing.clock_ms()) / 1000))
            await asyncio.sleep(delay)
            self.projector.expire_typing()
