"""`SyncInternal`: the in-process implementation of `services.syncapi.api.SyncAPI`."""
from __future__ import annotations

from services.syncapi.activity import SyncActivity
from services.syncapi.storage.store import SyncStore
from services.syncapi.streams import Notifier
from services.syncapi.sync import SyncEngine


class SyncInternal:
    def __init__(self, store: SyncStore, engine: SyncEngine, notifier: Notifier | None = None,
                 activity: SyncActivity | None = None) -> None:
        self.store = store
        self.engine = engine
        self.notifier = notifier
        self.activity = activity or SyncActivity()

    async def current_token(self) -> str:
        return self.engine.current_token().to_string()

    async def get_room_event_ids(self, room_id: str, limit: int = 50) -> list[str]:
        rows = await self.store.room_events(room_id, after=0, upto=self.engine.positions.events,
                                            limit=max(0, min(limit, 1000)), backwards=True)
        return [r.event_id for r in reversed(rows)]

    async def wait_for_event(self, event_id: str, timeout_s: float = 2.0) -> bool:
        """Wait until `event_id` is in a timeline here (read-your-writes for the
        clientapi: a client's /sync or /messages right after its PUT /send sees the
        event). False on timeout (e.g. a soft-failed event never gets a position)."""
        if self.activity.projected(event_id):  # (just projected: no query)
            return True
        if self.notifier is None:
            return await self.store.event_pos(event_id) is not None
        listener = self.notifier.listen([f"e:{event_id}"])  # listen first: no lost wake-up
        try:
            if await self.store.event_pos(event_id) is not None:
                return True
            await listener.wait(timeout_s)
            return self.activity.projected(event_id) or await self.store.event_pos(event_id) is not None
        finally:
            listener.close()
