"""In-memory stream state of one syncapi instance: current positions, the long-poll
notifier, and typing notifications (ephemeral, kept only in memory).

The notifier is keyed by ``"u:<user_id>"`` and ``"r:<room_id>"``. A long-poll
registers its listener *before* it re-checks positions, so a write that lands in
between can never be missed; writers call `notify` right after their commit.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.syncapi.api import StreamToken

# The events position may be negative: /messages tokens inside backfilled history.
_TOKEN_RE = re.compile(r"^s(-?\d{1,18})(?:_(\d{1,18}))?(?:_(\d{1,18}))?(?:_(\d{1,18}))?(?:_(\d{1,18}))?(?:_(\d{1,18}))?(?:_(\d{1,18}))?$")


class BadToken(ValueError):
    """A since/from/to token we did not issue (M_INVALID_PARAM)."""


def parse_token(text: str) -> StreamToken:
    m = _TOKEN_RE.match(text or "")
    if not m:
        raise BadToken(f"invalid stream token {text!r}")
    vals = [int(g) if g is not None else 0 for g in m.groups()]
    return StreamToken(events=vals[0], typing=vals[1], receipts=vals[2], to_device=vals[3],
                       account_data=vals[4], device_lists=vals[5], presence=vals[6])


@dataclass
class Positions:
    """The highest committed position of each stream (typing: this instance's counter)."""
    events: int = 0
    receipts: int = 0
    to_device: int = 0
    account_data: int = 0
    device_lists: int = 0

    def advance(self, stream: str, pos: int) -> None:
        if pos > getattr(self, stream):
            setattr(self, stream, pos)


class Listener:
    """One long-poll's registration; `wait` returns True if woken, False on timeout."""

    def __init__(self, notifier: "Notifier", keys: list[str]) -> None:
        self._notifier = notifier
        self.keys = keys
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self, timeout_s: float) -> bool:
        if timeout_s <= 0:
            return self.future.done()
        try:
            await asyncio.wait_for(asyncio.shield(self.future), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self._notifier._remove(self)


class Notifier:
    def __init__(self) -> None:
        self._by_key: dict[str, set[Listener]] = {}
        # Listeners woken (for /metrics): "sync" = /sync and /events long-polls,
        # "wait_event" = wait_for_event (read-your-writes; it listens on one "e:" key).
        self.woken: dict[str, int] = {"sync": 0, "wait_event": 0}

    def listen(self, keys: Iterable[str]) -> Listener:
        lst = Listener(self, list(dict.fromkeys(keys)))
        for k in lst.keys:
            self._by_key.setdefault(k, set()).add(lst)
        return lst

    def _remove(self, lst: Listener) -> None:
        for k in lst.keys:
            s = self._by_key.get(k)
            if s is not None:
                s.discard(lst)
                if not s:
                    del self._by_key[k]

    def notify(self, keys: Iterable[str]) -> None:
        for k in keys:
            for lst in list(self._by_key.get(k, ())):
                if not lst.future.done():
                    lst.future.set_result(None)
                    self.woken["wait_event" if k.startswith("e:") and len(lst.keys) == 1 else "sync"] += 1

    def notify_all(self) -> None:
        """Wake every waiting long-poll (after a gap in what we were told)."""
        self.notify(list(self._by_key))

    def listener_count(self) -> int:
        return sum(len(s) for s in self._by_key.values())


@dataclass
class TypingState:
    """Who is typing where, with expiry; `pos` increases on every change."""
    clock_ms: Callable[[], int]
    pos: int = 0
    _rooms: dict[str, dict[str, int]] = field(default_factory=dict)   # room -> user -> expiry ms
    _room_pos: dict[str, int] = field(default_factory=dict)

    def set(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> bool:
        """Apply a typing record; True if the visible state of the room changed."""
        now = self.clock_ms()
        self._expire_room(room_id, now)
        users = self._rooms.setdefault(room_id, {})
        if typing:
            was = user_id in users
            users[user_id] = now + max(0, min(int(timeout_ms), 120_000))
            changed = not was
        else:
            changed = users.pop(user_id, None) is not None
        if not users:
            self._rooms.pop(room_id, None)
        if changed:
            self._bump(room_id)
        return changed

    def _bump(self, room_id: str) -> None:
        self.pos += 1
        self._room_pos[room_id] = self.pos

    def _expire_room(self, room_id: str, now: int) -> bool:
        users = self._rooms.get(room_id)
        if not users:
            return False
        gone = [u for u, exp in users.items() if exp <= now]
        for u in gone:
            del users[u]
        if not users:
            del self._rooms[room_id]
        if gone:
            self._bump(room_id)
        return bool(gone)

    def expire(self) -> list[str]:
        """Drop expired typers; returns the rooms that changed."""
        now = self.clock_ms()
        return [r for r in list(self._rooms) if self._expire_room(r, now)]

    def next_expiry_ms(self) -> int | None:
        exps = [e for users in self._rooms.values() for e in users.values()]
        return min(exps) if exps else None

    def users(self, room_id: str) -> list[str]:
        return sorted(self._rooms.get(room_id, {}))

    def changed_rooms(self, room_ids: Iterable[str], since: int) -> list[str]:
        """Rooms whose typing changed after `since` (a position of this instance).

        A `since` beyond our counter (a token from before a restart) counts as changed."""
        if since > self.pos:
            return [r for r in room_ids if r in self._rooms]
        return [r for r in room_ids if self._room_pos.get(r, 0) > since]
