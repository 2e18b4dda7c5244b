"""`SyncActivity`: what this syncapi instance has seen projected since it started,
so the incremental /sync path and `wait_for_event` can answer from memory.

Fed with every committed write's (stream, position, notifier keys) — by the
projector of this instance and by the cross-replica announcements — *before*
the positions advance, so a /sync that sees position P also sees its record.

- per room: the latest events position announced for it (``r:`` keys). Once
  `start(floor)` is called, a room without an entry has nothing after `floor`,
  so a room with nothing new since the client's token costs zero queries;
- recently projected event IDs (``e:`` keys), an LRU: read-your-writes without
  a query;
- per user: the joined-room list and the ignored-users set, cached until a ``u:``
  key for that user (membership change, account data) invalidates them.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from services.syncapi.storage.store import MembershipRow, SyncStore

T = TypeVar("T")


class SyncActivity:
    def __init__(self, *, recent_events: int = 4096, cached_users: int = 10_000) -> None:
        self.floor: int | None = None  # None: not started, every question goes to the database
        self._room_pos: dict[str, int] = {}
        self._user_pos: dict[str, int] = {}  # latest events position with a u: key for the user
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_max = recent_events
        self._user_gen: dict[str, int] = {}
        self._rooms: OrderedDict[str, list[MembershipRow]] = OrderedDict()
        self._ignored: OrderedDict[str, set[str]] = OrderedDict()
        self._users_max = cached_users

    def start(self, floor: int) -> None:
        """Everything after events position `floor` will be `note`d from now on."""
        self.floor = floor

    def note(self, stream: str, pos: int, keys: Iterable[str]) -> None:
        keys = list(keys)
        if stream == "events" and len(keys) < 2:
            self.invalidate_all()  # (a truncated announcement: we cannot tell who it concerns)
        for k in keys:
            kind, _, ident = k.partition(":")
            if kind == "r" and stream == "events":
                if pos > self._room_pos.get(ident, 0):
                    self._room_pos[ident] = pos
            elif kind == "e" and stream == "events":
                self._recent[ident] = None
                self._recent.move_to_end(ident)
                if len(self._recent) > self._recent_max:
                    self._recent.popitem(last=False)
            elif kind == "u":
                if stream == "events" and pos > self._user_pos.get(ident, 0):
                    self._user_pos[ident] = pos
                self.invalidate_user(ident)

    def invalidate_user(self, user_id: str) -> None:
        self._user_gen[user_id] = self._user_gen.get(user_id, 0) + 1
        self._rooms.pop(user_id, None)
        self._ignored.pop(user_id, None)

    def invalidate_all(self) -> None:
        for u in set(self._rooms) | set(self._ignored):
            self.invalidate_user(u)

    # ---- questions --------------------------------------------------------------
    def rooms_with_events(self, room_ids: Sequence[str], after: int) -> set[str] | None:
        """Rooms that may have events after `after` (a superset; never misses one),
        or None when memory cannot tell (not started, or `after` before the floor)."""
        if self.floor is None or after < self.floor:
            return None
        return {r for r in room_ids if self._room_pos.get(r, 0) > after}

    def membership_unchanged(self, user_id: str, after: int) -> bool:
        """True if surely no membership of the user changed after events position `after`."""
        return self.floor is not None and after >= self.floor and self._user_pos.get(user_id, 0) <= after

    def projected(self, event_id: str) -> bool:
        """True if the event is known to have a timeline position (False: ask the database)."""
        return event_id in self._recent

    async def rooms_for_user(self, store: SyncStore, user_id: str) -> list[MembershipRow]:
        return list(await self._cached(self._rooms, user_id, lambda: store.rooms_for_user(user_id)))

    async def ignored_users(self, store: SyncStore, user_id: str) -> set[str]:
        return set(await self._cached(self._ignored, user_id, lambda: store.ignored_users(user_id)))

    async def _cached(self, cache: OrderedDict[str, T], user_id: str, load: Callable[[], Awaitable[T]]) -> T:
        if self.floor is not None and user_id in cache:
            cache.move_to_end(user_id)
            return cache[user_id]
        gen = self._user_gen.get(user_id, 0)
        value = await load()
        # Kept only if no invalidation raced with the query (it may have read the old value).
        if self.floor is not None and self._user_gen.get(user_id, 0) == gen:
            cache[user_id] = value
            if len(cache) > self._users_max:
                cache.popitem(last=False)
        return value
