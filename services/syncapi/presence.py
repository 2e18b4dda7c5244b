"""Presence in the syncapi: an in-memory view of every user's last presence, fed by
the `user.presence` topic (the userapi stores presence and publishes each change).

Like typing, presence is kept in memory per syncapi instance: each instance reads
the whole topic with its own consumer group from the beginning, so a restarted
instance rebuilds the view from the log. `pos` increases on every change and is
the `presence` part of sync tokens; a token from beyond `pos` (issued before a
restart) is answered with everything known.

Who sees whose presence: a user sees their own and that of everyone they share a
joined room with (no presence lists, no federation yet).
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from libs.log.api import EventLog, Record, TopicSpec
from libs.log.runner import KeyedRunner
from services.syncapi.storage.store import SyncStore
from services.syncapi.streams import Notifier
from services.userapi.api import TOPIC_PRESENCE, UserAPI

log = logging.getLogger(__name__)

PRESENCE_STATES = ("online", "offline", "unavailable")


@dataclass(frozen=True)
class PresenceRecord:
    user_id: str
    presence: str
    status_msg: str | None
    last_active_ts: int

    @staticmethod
    def parse(obj: Any) -> "PresenceRecord":
        if not isinstance(obj, dict):
            raise ValueError("presence record must be an object")
        user_id, presence = obj.get("user_id"), obj.get("presence")
        status_msg, ts = obj.get("status_msg"), obj.get("last_active_ts")
        if not isinstance(user_id, str) or presence not in PRESENCE_STATES:
            raise ValueError("bad presence record")
        if status_msg is not None and not isinstance(status_msg, str):
            raise ValueError("bad status_msg")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise ValueError("bad last_active_ts")
        return PresenceRecord(user_id, presence, status_msg, ts)

    def to_event(self, now_ms: int, *, legacy: bool = False) -> dict[str, Any]:
        """The m.presence event (`legacy`: /events and /initialSync also name the user in content)."""
        content: dict[str, Any] = {"presence": self.presence,
                                   "last_active_ago": max(0, now_ms - self.last_active_ts)}
        if self.presence == "online":
            content["currently_active"] = True
        if self.status_msg is not None:
            content["status_msg"] = self.status_msg
        if legacy:
            content["user_id"] = self.user_id
        return {"type": "m.presence", "sender": self.user_id, "content": content}


@dataclass
class PresenceState:
    pos: int = 0
    _users: dict[str, tuple[PresenceRecord, int]] = field(default_factory=dict)

    def set(self, rec: PresenceRecord) -> bool:
        """Apply a record; True if it changed what clients see. A newer activity time
        alone is kept without a new position (no wake-ups for it)."""
        cur = self._users.get(rec.user_id)
        if cur is not None and (cur[0].presence, cur[0].status_msg) == (rec.presence, rec.status_msg):
            if rec.last_active_ts > cur[0].last_active_ts:
                self._users[rec.user_id] = (rec, cur[1])
            return False
        self.pos += 1
        self._users[rec.user_id] = (rec, self.pos)
        return True

    def get(self, user_id: str) -> PresenceRecord | None:
        hit = self._users.get(user_id)
        return hit[0] if hit else None

    def changed(self, user_ids: Iterable[str], since: int | None) -> list[PresenceRecord]:
        """The records of `user_ids` changed after `since` (None or a future position: all)."""
        everything = since is None or since > self.pos
        out = []
        for u in user_ids:
            hit = self._users.get(u)
            if hit is not None and (everything or hit[1] > since):  # type: ignore[operator]
                out.append(hit[0])
        out.sort(key=lambda r: self._users[r.user_id][1])
        return out


class PresenceTracker:
    """What /sync does to presence: a sync marks the user online unless it asks otherwise
    (`set_presence=offline` changes nothing; an explicit `unavailable` is kept by plain syncs)."""

    def __init__(self, state: PresenceState, userapi: UserAPI,
                 apply: Callable[[PresenceRecord], Awaitable[None]] | None = None) -> None:
        self.state = state
        self.userapi = userapi
        # Applied here at once (and notified), so this very /sync and its next_batch
        # include the change; the record coming back from the log is then no change.
        self.apply = apply

    async def on_sync(self, user_id: str, set_presence: str | None) -> None:
        if set_presence == "offline":
            return
        cur = self.state.get(user_id)
        wanted = set_presence or "online"
        if cur is not None and (cur.presence == wanted or (set_presence is None and cur.presence == "unavailable")):
            return
        status_msg = cur.status_msg if cur else None
        try:
            await self.userapi.set_presence(user_id, wanted, status_msg)
        except Exception:  # presence is best-effort: never fail the /sync for it
            log.warning("could not set %s's presence on sync", user_id, exc_info=True)
            return
        rec = PresenceRecord(user_id, wanted, status_msg, int(time.time() * 1000))
        if self.apply is not None:
            await self.apply(rec)
        else:
            self.state.set(rec)


class PresenceConsumer:
    """Consumes `user.presence` into a `PresenceState` and wakes the long-polls of
    everyone who shares a room with the user."""

    def __init__(self, log_: EventLog, state: PresenceState, store: SyncStore, notifier: Notifier, *,
                 group_prefix: str = "syncapi", instance_id: str | None = None) -> None:
        self.log = log_
        self.state = state
        self.store = store
        self.notifier = notifier
        self.group = f"{group_prefix}.presence.{instance_id or uuid.uuid4().hex[:12]}"
        self._runner: KeyedRunner | None = None

    async def start(self) -> None:
        await self.log.ensure_topics([TopicSpec(TOPIC_PRESENCE, partitions=8)])
        self._runner = KeyedRunner(self.log.consumer(self.group, [TOPIC_PRESENCE]), self._handle, name=self.group)
        await self._runner.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()
            self._runner = None

    async def _handle(self, record: Record) -> None:
        try:
            rec = PresenceRecord.parse(json.loads(record.value))
        except ValueError as e:  # json errors are ValueErrors too
            log.warning("bad user.presence record at %s: %s", record.offset, e)
            return
        await self.apply(rec)

    async def apply(self, rec: PresenceRecord) -> None:
        if not self.state.set(rec):
            return
        rooms = await self.store.rooms_for_user(rec.user_id)
        self.notifier.notify([f"u:{rec.user_id}"] + [f"r:{m.room_id}" for m in rooms if m.membership == "join"])


def presence_events(state: PresenceState, user_ids: Iterable[str], since: int | None,
                    clock_ms: Callable[[], int] | None = None, *, legacy: bool = False) -> list[dict[str, Any]]:
    now = clock_ms() if clock_ms else int(time.time() * 1000)
    return [r.to_event(now, legacy=legacy) for r in state.changed(user_ids, since)]
