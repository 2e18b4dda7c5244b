"""The outbox relay: publishes committed events to `roomserver.output`.

Every committed event has an outbox row written in its own transaction. The
relay publishes rows in commit order (per room: strictly in order; rooms in a
batch go out concurrently, or all in one append with the embedded log), then
marks them sent. On start it first publishes
every row still unsent, so a crash between commit and publish re-publishes
instead of losing; a crash between publish and mark publishes twice, which
consumers absorb by deduplicating on event_id.

Outages: a failed publish or mark (broker or database away) leaves the batch queued
and is retried with backoff (capped at 5 s) until it goes through. As a safety net
the relay also sweeps the outbox every ``sweep_interval_s``: a row found unsent in
two sweeps in a row (so not merely in flight) that it was never handed is published
(e.g. a commit whose success was never reported, or a replica that died).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from libs.log.api import Producer

from services.roomserver.api import TOPIC_OUTPUT
from services.roomserver.storage.store import RoomserverStore

log = logging.getLogger(__name__)

OutboxRow = tuple[int, str, str, str]  # (outbox_nid, room_id, event_id, record JSON)


class OutboxRelay:
    def __init__(
        self,
        store: RoomserverStore,
        producer: Producer,
        topic: str = TOPIC_OUTPUT,
        *,
        batch_size: int = 500,
        prune_every: int = 10_000,
        sweep_interval_s: float = 5.0,
    ) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self.batch_size = batch_size
        self.prune_every = prune_every
        self._queue: deque[OutboxRow] = deque()
        self._queued: set[int] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._sent_since_prune = 0
        self.published = 0
        self.sweep_interval_s = sweep_interval_s
        self._next_sweep = time.monotonic() + sweep_interval_s
        self._suspects: set[int] = set()  # unsent at the last sweep
        self.swept = 0

    def notify(self, rows: list[OutboxRow]) -> None:
        """Rows just committed (in commit order)."""
        for row in rows:
            if row[0] not in self._queued:
                self._queued.add(row[0])
                self._queue.append(row)
        if self._queue:
            self._idle.clear()
            self._wake.set()

    async def start(self) -> None:
        if self._task is not None:
            return
        # Whatever a previous run committed but did not publish goes first.
        while True:
            rows = [r for r in await self.store.unsent_outbox(self.batch_size * 10) if r[0] not in self._queued]
            if not rows:
                break
            self.notify(rows)
            if len(rows) < self.batch_size * 10:
                break
            await self._drain_once()
        self._task = asyncio.create_task(self._run(), name="roomserver-outbox-relay")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.wait_idle(), drain_timeout_s)
        except asyncio.TimeoutError:
            log.warning("outbox relay stopped with %d unpublished rows (sent on next start)", len(self._queue))
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def wait_idle(self) -> None:
        """Until every notified row is published and marked."""
        await self._idle.wait()

    async def publish_unsent(self, owns_room: Callable[[str], bool], page: int = 1000) -> int:
        """Publish every unsent row of the rooms `owns_room` accepts, then return.

        Called when this replica is assigned input partitions (cluster: replicas share
        the outbox table): a previous owner that died between commit and publish left
        rows that nobody else will send, and they must go out before this replica
        writes the rooms' next events, or consumers would see them out of order.
        Rows another replica is still publishing may go out twice; consumers dedupe
        on event_id, and each room's rows still go out in commit order."""
        after, found = 0, 0
        while True:
            rows = await self.store.db.fetch(
                "SELECT outbox_nid, room_id, event_id, record FROM outbox WHERE sent = FALSE"
                " AND outbox_nid > $1 ORDER BY outbox_nid LIMIT $2", after, page)
            if not rows:
                break
            after = int(rows[-1][0])
            mine = [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows if owns_room(str(r[1]))]
            found += len(mine)
            self.notify(mine)
            if len(rows) < page:
                break
        if found:
            log.info("outbox relay: re-publishing %d unsent rows of newly assigned rooms", found)
            await self.wait_idle()
        return found

    async def _sweep(self) -> None:
        self._next_sweep = time.monotonic() + self.sweep_interval_s
        try:
            rows = await self.store.unsent_outbox(self.batch_size)
        except Exception as e:  # (database away: the next sweep tries again)
            log.debug("outbox sweep failed: %r", e)
            return
        stuck = [r for r in rows if r[0] in self._suspects and r[0] not in self._queued]
        self._suspects = {r[0] for r in rows}
        if stuck:
            log.warning("outbox relay: %d committed rows were never handed over; publishing them", len(stuck))
            self.swept += len(stuck)
            self.notify(stuck)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if time.monotonic() >= self._next_sweep:
                await self._sweep()
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.0, self._next_sweep - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                await self._drain_once()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying in %.2fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _drain_once(self) -> None:
        batch = [self._queue[i] for i in range(min(self.batch_size, len(self._queue)))]
        by_room: dict[str, list[OutboxRow]] = {}
        for row in batch:
            by_room.setdefault(row[1], []).append(row)

        async def publish_room(rows: list[OutboxRow]) -> None:
            for _nid, room_id, _eid, record in rows:
                await self.producer.send(self.topic, room_id, record.encode())

        # A failure leaves the whole batch queued: rows already published go out
        # again, which consumers' dedup on event_id absorbs.
        send_batch = getattr(self.producer, "send_batch", None)
        if send_batch is not None:
            # The embedded log appends the whole batch, in commit order, in one round trip.
            await send_batch(self.topic, [(room_id, record.encode(), None) for _n, room_id, _e, record in batch])
        else:
            await asyncio.gather(*(publish_room(rows) for rows in by_room.values()))
        nids = [row[0] for row in batch]
        await self.store.mark_sent(nids)
        for _ in batch:
            self._queue.popleft()
        self._queued.difference_update(nids)
        self.published += len(batch)
        self._sent_since_prune += len(batch)
        if self._sent_since_prune >= self.prune_every:
            self._sent_since_prune = 0
            await self.store.prune_outbox(min(nids))
