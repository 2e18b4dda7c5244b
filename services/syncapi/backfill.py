"""Outbound backfill for /messages: when a backwards page reaches the earliest event we
hold and that event has prev_events we never saw (we joined a room with history), the
roomserver fetches older events from a server in the room (`backfill_from_remote`:
checked, stored as outliers) and they are placed here at negative stream positions
(`SyncStore.insert_historical`), ordered newest first, so /messages continues into them
while /sync (positions > 0) never sees them as new."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from services.roomserver.api import RoomserverAPI
from services.syncapi.storage.store import SyncStore
from libs.events.event import reference_ids

log = logging.getLogger(__name__)

MAX_BACKFILL = 100
# A start point that gave nothing (remote down, history hidden, nothing older) is not
# asked again for this long: every page reaching it would otherwise wait on the remote.
RETRY_AFTER_S = 60.0
MAX_REMEMBERED = 10_000


def prev_event_ids(pdu: dict[str, Any]) -> list[str]:
    """`prev_events` as IDs: bare IDs (v3+) or `[id, hashes]` pairs (v1/v2)."""
    return reference_ids(pdu.get("prev_events"))


class HistoryBackfill:
    def __init__(self, store: SyncStore, roomserver: RoomserverAPI,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.roomserver = roomserver
        self.clock = clock
        self._fruitless: dict[tuple[str, str], float] = {}  # (room, start event) -> retry time

    async def needed(self, room_id: str) -> str | None:
        """The earliest event we hold when some of its prev_events are not in our timeline."""
        first = await self.store.earliest_room_event(room_id)
        if first is None:
            return None
        ids = prev_event_ids(first.pdu)
        if not ids:
            return None  # the create event: nothing before it
        async with self.store.db.transaction() as tx:
            held = await self.store.stream_positions_of(tx, ids)
        return first.event_id if any(i not in held for i in ids) else None

    async def __call__(self, room_id: str, limit: int) -> int:
        """Fetch up to `limit` older events of `room_id` if our history has a gap at its
        start; returns how many new events were placed (0: nothing more to get)."""
        start = await self.needed(room_id)
        if start is None:
            return 0
        key = (room_id, start)
        now = self.clock()
        if self._fruitless.get(key, 0.0) > now:
            return 0
        placed = 0
        try:
            ids = await self.roomserver.backfill_from_remote(room_id, [start], max(1, min(limit, MAX_BACKFILL)))
            if ids:
                events = await self.roomserver.get_events(ids)
                pdus = [events[i] for i in ids if i in events and events[i].get("room_id") == room_id]
                placed = await self.store.insert_historical(room_id, pdus)
        except Exception as e:  # remote trouble never fails the /messages page
            log.info("backfill of %s failed: %s", room_id, e)
        if placed == 0:
            if len(self._fruitless) >= MAX_REMEMBERED:
                self._fruitless.clear()
            self._fruitless[key] = now + RETRY_AFTER_S
        return placed
