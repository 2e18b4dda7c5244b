"""`SyncInternal`: the in-process implementation of `services.syncapi.api.SyncAPI`."""
from __future__ import annotations

from services.syncapi.storage.store import SyncStore
from services.syncapi.sync import SyncEngine


class SyncInternal:
    def __init__(self, store: SyncStore, engine: SyncEngine) -> None:
        self.store = store
        self.engine = engine

    async def current_token(self) -> str:
        return self.engine.current_token().to_string()

    async def get_room_event_ids(self, room_id: str, limit: int = 50) -> list[str]:
        rows = await self.store.room_events(room_id, after=0, upto=self.engine.positions.events,
                                            limit=max(0, min(limit, 1000)), backwards=True)
        return [r.event_id for r in reversed(rows)]
