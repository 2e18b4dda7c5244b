"""Read-side helpers shared by /sync, /messages and /context: client formatting of
stored events (redactions, prev_content, transaction IDs), history visibility, and
state at a stream position (current state rewound through `state_deltas`)."""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from libs.events.client_format import to_client_event
from libs.events.redaction import redact
from libs.events.room_versions import UnsupportedRoomVersion, get_room_version
from services.syncapi.storage.store import EventRow, StateDelta, SyncStore

StateMap = dict[tuple[str, str], str]

_VIS_RANK = {"world_readable": 0, "shared": 1, "invited": 2, "joined": 3}


async def format_events(store: SyncStore, rows: Sequence[EventRow], *, device_id: str | None, now_ms: int,
                        include_room_id: bool = False) -> list[dict[str, Any]]:
    """Client-format events in one batch (one query for all their redactions)."""
    if not rows:
        return []
    versions = await store.room_versions({r.room_id for r in rows})
    red_ids = [r.redacted_by for r in rows if r.redacted_by]
    redactions = await store.events_by_ids(red_ids) if red_ids else {}
    out: list[dict[str, Any]] = []
    for r in rows:
        pdu = r.pdu
        unsigned: dict[str, Any] = {}
        if r.redacted_by:
            try:
                rv = get_room_version(versions.get(r.room_id, "10"))
            except UnsupportedRoomVersion:
                rv = get_room_version("10")
            pdu = redact(pdu, rv)
            unsigned["redacted_by"] = r.redacted_by  # as Synapse (SyTest reads it)
            red = redactions.get(r.redacted_by)
            if red is not None:
                unsigned["redacted_because"] = to_client_event(red.pdu, now_ms=now_ms, include_room_id=include_room_id)
        if device_id is not None and r.device_id == device_id and r.txn_id:
            unsigned["transaction_id"] = r.txn_id
        out.append(to_client_event(pdu, now_ms=now_ms, unsigned=unsigned, include_room_id=include_room_id))
    return out


def state_at(current: StateMap, deltas_after: Sequence[StateDelta], pos: int) -> StateMap:
    """Room state after position `pos`, from current state and the deltas after it (ordered)."""
    out = dict(current)
    seen: set[tuple[str, str]] = set()
    for d in deltas_after:
        if d.stream_pos <= pos:
            continue
        key = (d.type, d.state_key)
        if key in seen:
            continue
        seen.add(key)
        if d.prev_event_id is None:
            out.pop(key, None)
        else:
            out[key] = d.prev_event_id
    return out


def value_at(deltas_after_since: Sequence[StateDelta], key: tuple[str, str], pos: int) -> tuple[bool, str | None]:
    """(known, event_id) of `key` at `pos` using only deltas after an earlier position.

    known=False: no delta of the key after that earlier position (ask current state)."""
    last: StateDelta | None = None
    first_after: StateDelta | None = None
    for d in deltas_after_since:
        if (d.type, d.state_key) != key:
            continue
        if d.stream_pos <= pos:
            last = d
        elif first_after is None:
            first_after = d
    if last is not None:
        return True, last.event_id
    if first_after is not None:
        return True, first_after.prev_event_id
    return False, None


@dataclass
class Visibility:
    """Decides whether a user may see each event of one room (spec "History visibility").

    Built from the user's membership deltas and the room's history_visibility deltas."""
    user_id: str
    member_pos: list[int]
    member_vals: list[str]
    vis_pos: list[int]
    vis_vals: list[str]
    current_membership: str | None
    room_id: str = ""
    complete: bool = False  # False: visibility history not loaded (caller proved it cannot matter)

    @classmethod
    async def load(cls, store: SyncStore, room_id: str, user_id: str, current_membership: str | None,
                   min_pos: int | None = None) -> Visibility:
        """`min_pos`: the earliest position the caller will ask about, if known. The
        room's visibility history is only loaded when it can matter (see `prepare`)."""
        mdeltas = await store.member_deltas(room_id, user_id)
        self = cls(user_id, [d.stream_pos for d in mdeltas], [d.membership or "leave" for d in mdeltas],
                   [], [], current_membership, room_id=room_id)
        if min_pos is None or not self.always_joined_from(min_pos):
            await self.prepare(store, min_pos)
        return self

    async def prepare(self, store: SyncStore, min_pos: int | None) -> None:
        """Make `visible` valid for events from `min_pos` on (None: any event)."""
        if self.complete or (min_pos is not None and self.always_joined_from(min_pos)):
            return
        vdeltas = await store.state_deltas_after(self.room_id, -1, types=["m.room.history_visibility"])
        vis_events = await store.events_by_ids([d.event_id for d in vdeltas if d.event_id])
        vvals: list[str] = []
        for d in vdeltas:
            ev = vis_events.get(d.event_id or "")
            v = ev.pdu.get("content", {}).get("history_visibility") if ev else None
            vvals.append(v if isinstance(v, str) and v in _VIS_RANK else "shared")
        self.vis_pos = [d.stream_pos for d in vdeltas]
        self.vis_vals = vvals
        self.complete = True

    def always_joined_from(self, pos: int | None) -> bool:
        """True if the user was joined at `pos` and never left after (every later event is visible)."""
        if pos is None:
            return False
        i = bisect.bisect_right(self.member_pos, pos)
        return i > 0 and all(v == "join" for v in self.member_vals[i - 1:])

    def membership_at(self, pos: int) -> str:
        i = bisect.bisect_right(self.member_pos, pos)
        return self.member_vals[i - 1] if i > 0 else "leave"

    def visibility_before(self, pos: int) -> str:
        if pos < 0 and self.vis_vals:
            # Backfilled history (negative positions): its state is not tracked here; the
            # setting at the start of what we held (the first delta) stands in for it.
            return self.vis_vals[0]
        i = bisect.bisect_left(self.vis_pos, pos)
        return self.vis_vals[i - 1] if i > 0 else "shared"

    def visible(self, row: EventRow) -> bool:
        pos = row.stream_pos or 0
        if row.type == "m.room.member" and row.state_key == self.user_id:
            return True
        vis = self.visibility_before(pos)
        if row.type == "m.room.history_visibility" and row.state_key == "":
            after = row.pdu.get("content", {}).get("history_visibility")
            if isinstance(after, str) and after in _VIS_RANK and _VIS_RANK[after] < _VIS_RANK[vis]:
                vis = after
        if vis == "world_readable":
            return True
        membership = self.membership_at(pos)
        if membership == "join":
            return True
        if vis == "shared" and self.current_membership == "join":
            return True
        if vis in ("shared", "invited") and membership == "invite":
            return True
        return False

    def filter(self, rows: Sequence[EventRow]) -> list[EventRow]:
        if not rows:
            return []
        first = min(r.stream_pos or 0 for r in rows)
        if self.always_joined_from(first):
            return list(rows)
        return [r for r in rows if self.visible(r)]
