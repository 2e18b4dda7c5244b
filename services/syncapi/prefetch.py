"""Batched reads for one /sync that covers many rooms.

Building a room of a /sync response asks the store a dozen small questions (its
current state, its members, the user's membership history and read receipt, the
events named by its state). Asked room by room that is a dozen round trips per room
(on SQLite, a thread hop each); an initial /sync of 20 rooms paid ~260 of them.
`PrefetchedStore` asks the per-room questions once for all the rooms of the response
and answers the room builders from memory; anything it has not prefetched goes to
the real store. It lives for one request: nothing here is cached across requests.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from libs.storage import Connection
from services.syncapi.storage.store import EventRow, StateDelta, SyncStore

HISTORY_VISIBILITY = "m.room.history_visibility"


class PrefetchedStore:
    """A read-through view of `SyncStore` for the rooms of one /sync (same method signatures)."""

    def __init__(self, store: SyncStore, user_id: str) -> None:
        self._store = store
        self._user_id = user_id
        self._state: dict[str, list[tuple[str, str, str, str | None]]] = {}
        self._member_deltas: dict[str, list[StateDelta]] = {}
        self._read_pos: dict[str, int] = {}
        self._vis_deltas: dict[str, list[StateDelta]] = {}
        self._events: dict[str, EventRow] = {}

    @classmethod
    async def load(cls, store: SyncStore, user_id: str, room_ids: Sequence[str]) -> PrefetchedStore:
        self = cls(store, user_id)
        if room_ids:
            self._state = await store.current_state_many(room_ids)
            self._member_deltas = await store.member_deltas_many(room_ids, user_id)
            self._read_pos = await store.user_read_pos_many(room_ids, user_id)
            # The history visibility changes (views.Visibility.prepare) and their events.
            self._vis_deltas = await store.state_deltas_of_type_many(room_ids, HISTORY_VISIBILITY)
            await self.events_by_ids([d.event_id for ds in self._vis_deltas.values() for d in ds if d.event_id])
        return self

    def __getattr__(self, name: str) -> Any:
        # Everything not answered here is the store's own (db, room_events, ...).
        return getattr(self._store, name)

    # ---- answered from the prefetch --------------------------------------------------
    async def current_state(self, room_id: str) -> dict[tuple[str, str], str]:
        rows = self._state.get(room_id)
        if rows is None:
            return await self._store.current_state(room_id)
        return {(t, sk): eid for t, sk, eid, _ in rows}

    async def current_members(self, room_id: str) -> list[tuple[str, str, str]]:
        rows = self._state.get(room_id)
        if rows is None:
            return await self._store.current_members(room_id)
        return [(sk, m or "", eid) for t, sk, eid, m in rows if t == "m.room.member"]

    async def current_state_for_keys(self, conn: Connection, room_id: str, keys: Sequence[tuple[str, str]]
                                     ) -> dict[tuple[str, str], str]:
        rows = self._state.get(room_id)
        if rows is None or conn is not self._store.db:  # inside a transaction: ask it
            return await self._store.current_state_for_keys(conn, room_id, keys)
        wanted = set(keys)
        return {(t, sk): eid for t, sk, eid, _ in rows if (t, sk) in wanted}

    async def member_deltas(self, room_id: str, user_id: str) -> list[StateDelta]:
        if user_id != self._user_id or room_id not in self._member_deltas:
            return await self._store.member_deltas(room_id, user_id)
        return list(self._member_deltas[room_id])

    async def state_deltas_after(self, room_id: str, after: int, upto: int | None = None,
                                 types: Sequence[str] | None = None) -> list[StateDelta]:
        if after == -1 and upto is None and types is not None and list(types) == [HISTORY_VISIBILITY] \
                and room_id in self._vis_deltas:
            return list(self._vis_deltas[room_id])
        return await self._store.state_deltas_after(room_id, after, upto, types)

    async def user_read_pos(self, room_id: str, user_id: str) -> int:
        if user_id != self._user_id or room_id not in self._read_pos:
            return await self._store.user_read_pos(room_id, user_id)
        return self._read_pos[room_id]

    async def events_by_ids(self, event_ids: Sequence[str]) -> dict[str, EventRow]:
        """Events rows are immutable apart from `redacted_by`, which is read once per request."""
        missing = [e for e in dict.fromkeys(event_ids) if e not in self._events]
        if missing:
            self._events.update(await self._store.events_by_ids(missing))
        return {e: self._events[e] for e in event_ids if e in self._events}
