"""The /sync response builder and long-poll (spec "Syncing").

A response is built from a snapshot `now` of the positions against the client's
`since`; the same code serves initial (since=None) and incremental syncs. A
long-poll registers with the notifier *before* building, so anything committed
after the snapshot wakes it, and then rebuilds.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from libs.events.client_format import strip_to_state
from services.syncapi.activity import SyncActivity
from services.syncapi.api import StreamToken
from services.syncapi.filters import DEFAULT_TIMELINE_LIMIT, EventFilter, SyncFilter, apply_event_fields
from services.syncapi.storage.store import EventRow, MembershipRow, ReceiptRow, StateDelta, SyncStore
from services.syncapi.prefetch import PrefetchedStore
from services.syncapi.presence import PresenceState, presence_events
from services.syncapi.streams import Notifier, Positions, TypingState
from services.syncapi.views import StateMap, Visibility, format_events, state_at, value_at

INVITE_STATE_TYPES = (
    "m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
    "m.room.canonical_alias", "m.room.encryption", "m.room.topic",
)
MAX_TO_DEVICE = 100


@dataclass
class SyncRequest:
    user_id: str
    device_id: str | None
    since: StreamToken | None = None
    timeout_ms: int = 0
    full_state: bool = False
    filter: SyncFilter = field(default_factory=SyncFilter)


@dataclass
class _RoomTimeline:
    rows: list[EventRow]
    limited: bool
    start_pos: int  # position just before the first timeline event


class SyncEngine:
    def __init__(self, store: SyncStore, positions: Positions, notifier: Notifier, typing: TypingState,
                 clock_ms: Callable[[], int] | None = None, presence: PresenceState | None = None,
                 activity: SyncActivity | None = None) -> None:
        self.store = store
        # What was projected since start-up: lets the incremental path skip rooms
        # (and queries) with nothing new. Unstarted, it defers everything to the database.
        self.activity = activity or SyncActivity()
        self.presence = presence or PresenceState()
        self.positions = positions
        self.notifier = notifier
        self.typing = typing
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        # (user, device) -> to-device position already deleted up to by this instance.
        self._to_device_acked: dict[tuple[str, str], int] = {}

    def current_token(self) -> StreamToken:
        p = self.positions
        return StreamToken(events=p.events, typing=self.typing.pos, receipts=p.receipts,
                           to_device=p.to_device, account_data=p.account_data, device_lists=p.device_lists,
                           presence=self.presence.pos)

    # ---- long-poll --------------------------------------------------------------
    async def sync(self, req: SyncRequest) -> dict[str, Any]:
        deadline = time.monotonic() + max(0, req.timeout_ms) / 1000
        while True:
            rooms = await self.activity.rooms_for_user(self.store, req.user_id)
            keys = [f"u:{req.user_id}"] + [f"r:{m.room_id}" for m in rooms if m.membership == "join"]
            listener = self.notifier.listen(keys)
            try:
                resp, has_data = await self.build(req, rooms)
                remaining = deadline - time.monotonic()
                if has_data or req.since is None or req.full_state or remaining <= 0:
                    return resp
                if not await listener.wait(remaining):
                    return resp
            finally:
                listener.close()

    # ---- building -----------------------------------------------------------
    async def build(self, req: SyncRequest, memberships: list[MembershipRow] | None = None
                    ) -> tuple[dict[str, Any], bool]:
        now = self.current_token()
        since = req.since
        if since is not None:
            # A token from the future (e.g. a reset database) is treated as "now"; a
            # negative events position (a /messages token inside backfilled history) as 0:
            # backfilled events sit below 0 and must never be listed as new.
            since = StreamToken(
                events=max(0, min(since.events, now.events)), typing=since.typing,
                receipts=min(since.receipts, now.receipts), to_device=min(since.to_device, now.to_device),
                account_data=min(since.account_data, now.account_data),
                device_lists=min(since.device_lists, now.device_lists), presence=since.presence)
        if memberships is None:
            memberships = await self.activity.rooms_for_user(self.store, req.user_id)
        ignored = await self.ignored_users(req.user_id)
        if ignored:
            # Events (and invites) from ignored users are never shown (spec "Ignoring Users").
            tl = req.filter.room.timeline
            req = dataclasses.replace(req, filter=dataclasses.replace(req.filter, room=dataclasses.replace(
                req.filter.room, timeline=dataclasses.replace(tl, not_senders=list(tl.not_senders) + sorted(ignored)))))
        now_ms = self.clock_ms()
        rf = req.filter.room
        joined: dict[str, Any] = {}
        invited: dict[str, Any] = {}
        left: dict[str, Any] = {}
        knocked: dict[str, Any] = {}

        changes: dict[str, list[StateDelta]] = {}
        if (since is not None and since.events < now.events  # (an empty range needs no query)
                and not self.activity.membership_unchanged(req.user_id, since.events)):
            for d in await self.store.membership_changes(req.user_id, since.events, now.events):
                changes.setdefault(d.room_id, []).append(d)

        joined_ids = [m.room_id for m in memberships if m.membership == "join" and rf.allows_room(m.room_id)]
        active: set[str] = set(joined_ids)
        if since is not None and not req.full_state:
            known = self.activity.rooms_with_events(joined_ids, since.events)
            active = (known if known is not None
                      else await self.store.rooms_with_events(joined_ids, since.events, now.events))
            active |= {r for r in joined_ids if r in changes}
            active |= set(self.typing.changed_rooms(joined_ids, since.typing))
        receipts_by_room: dict[str, list[ReceiptRow]] = {}
        if since is None or since.receipts < now.receipts:
            for r in await self.store.receipts(joined_ids, since.receipts if since else 0, now.receipts):
                receipts_by_room.setdefault(r.room_id, []).append(r)
        acc_rows = (await self.store.account_data(req.user_id, since.account_data if since else 0, now.account_data)
                    if since is None or since.account_data < now.account_data else [])
        room_acc: dict[str, list[dict[str, Any]]] = {}
        global_acc: list[dict[str, Any]] = []
        for room_id, dtype, content in acc_rows:
            ev = {"type": dtype, "content": content}
            if room_id:
                if rf.account_data.allows({"type": dtype}) and rf.allows_room(room_id):
                    room_acc.setdefault(room_id, []).append(ev)
            elif req.filter.account_data.allows({"type": dtype}):
                global_acc.append(ev)
        active |= {r for r in receipts_by_room if r in set(joined_ids)}
        active |= {r for r in room_acc if r in set(joined_ids)}

        async def one(m: MembershipRow) -> tuple[str, dict[str, Any] | None]:
            if m.membership == "join" and m.room_id in active:
                newly = since is not None and await eng._newly_joined(m.room_id, req.user_id, since.events,
                                                                       changes.get(m.room_id, []))
                return "join", await eng._joined_room(
                    req, m.room_id, since, now, now_ms, full=(since is None or req.full_state or newly), newly=newly,
                    receipts=receipts_by_room.get(m.room_id, []), account_data=room_acc.get(m.room_id, []))
            if m.membership == "invite" and (since is None or m.room_id in changes):
                if ignored and await eng._invited_by(m) in ignored:
                    return "", None
                return "invite", await eng._invite_room(m, now_ms)
            if m.membership == "knock" and (since is None or m.room_id in changes):
                return "knock", {"knock_state": {"events": await eng._stripped_state(m, now_ms, "knock")}}
            if m.membership in ("leave", "ban") and (
                    (since is not None and m.room_id in changes) or (since is None and rf.include_leave)):
                return "leave", await eng._left_room(req, m, since, now, now_ms)
            return "", None

        # Rooms are built concurrently: their queries queue up on the database
        # instead of paying one round trip after another.
        picked = [m for m in memberships if rf.allows_room(m.room_id)]
        # A full sync of several rooms reads their per-room data in one batch (prefetch.py).
        eng = self
        full_ids = [m.room_id for m in picked if m.membership == "join" and m.room_id in active]
        if (since is None or req.full_state) and len(full_ids) > 1:
            eng = copy.copy(self)
            eng.store = await PrefetchedStore.load(self.store, req.user_id, full_ids)  # type: ignore[assignment]
        sections = {"join": joined, "invite": invited, "leave": left, "knock": knocked}
        for m, (kind, room) in zip(picked, await asyncio.gather(*(one(m) for m in picked))):
            if kind and room is not None:
                sections[kind][m.room_id] = room

        device_lists = await self._device_lists(req.user_id, since, now, joined_ids, memberships, changes)
        to_device, td_pos = await self._to_device(req, since, now)
        presence = await self._presence(req, since, now, memberships)
        next_tok = StreamToken(events=now.events, typing=now.typing, receipts=now.receipts,
                               to_device=td_pos, account_data=now.account_data, device_lists=now.device_lists,
                               presence=now.presence)
        resp: dict[str, Any] = {
            "next_batch": next_tok.to_string(),
            "rooms": {"join": joined, "invite": invited, "leave": left, "knock": knocked},
            "account_data": {"events": global_acc},
            "presence": {"events": presence},
            "to_device": {"events": to_device},
            "device_lists": device_lists,
            "device_one_time_keys_count": {},
        }
        has_data = bool(joined or invited or left or knocked or global_acc or to_device or presence
                        or device_lists["changed"] or device_lists["left"])
        if req.filter.event_fields is not None:
            fields = req.filter.event_fields
            for section in (joined, left):
                for room in section.values():
                    for part in ("timeline", "state"):
                        room[part]["events"] = [apply_event_fields(e, fields) for e in room[part]["events"]]
        return resp, has_data

    async def _presence(self, req: SyncRequest, since: StreamToken | None, now: StreamToken,
                        memberships: list[MembershipRow]) -> list[dict[str, Any]]:
        """m.presence of the user and of everyone sharing a joined room, changed since `since`."""
        if not req.filter.presence.allows({"type": "m.presence"}):
            return []
        if since is not None and since.presence == now.presence:
            return []  # nothing changed (the common case: no query)
        joined = [m.room_id for m in memberships if m.membership == "join"]
        users = (await self.store.joined_members_of(joined) if joined else set()) | {req.user_id}
        return presence_events(self.presence, users, since.presence if since else None, self.clock_ms)

    async def ignored_users(self, user_id: str) -> set[str]:
        return await self.activity.ignored_users(self.store, user_id)

    async def _invited_by(self, m: MembershipRow) -> str | None:
        rows = await self.store.events_by_ids([m.event_id])
        return rows[m.event_id].sender if m.event_id in rows else None

    async def _newly_joined(self, room_id: str, user_id: str, since: int, deltas: list[StateDelta]) -> bool:
        """Whether the user joined after `since` (a profile change, join -> join, is not a join)."""
        if not any(d.membership == "join" for d in deltas):
            return False
        return await self.store.membership_at(room_id, user_id, since) != "join"

    async def _timeline(self, room_id: str, *, after: int, upto: int, flt: EventFilter,
                        vis: Visibility | None) -> _RoomTimeline:
        limit = flt.limit if flt.limit is not None else DEFAULT_TIMELINE_LIMIT
        picked: list[EventRow] = []
        cursor = upto
        limited = False
        batch = limit + 1 if flt.allows_all_types() else max(limit + 1, 50)
        scanned = 0
        while True:
            rows = await self.store.room_events(room_id, after=after, upto=cursor, limit=batch, backwards=True)
            if vis is not None and rows:
                await vis.prepare(self.store, rows[-1].stream_pos)
            # State events that are still the room's current state are shown even
            # when history visibility hides them (as Synapse): clients need them.
            hidden = [r.event_id for r in rows if vis is not None and r.state_key is not None and not vis.filter([r])]
            current = set(await self.store.current_state_keys_of(self.store.db, room_id, hidden)) if hidden else set()
            for r in rows:
                if flt.allows(r.pdu) and (vis is None or r.event_id in current or vis.filter([r])):
                    if len(picked) == limit:
                        limited = True
                        break
                    picked.append(r)
            scanned += len(rows)
            if limited or len(rows) < batch or scanned >= 2000:
                if scanned >= 2000 and len(rows) == batch:
                    limited = True
                break
            cursor = rows[-1].stream_pos or 0
        picked.reverse()
        start = (picked[0].stream_pos or 1) - 1 if picked else upto
        if limit == 0:
            limited = await self.store.rooms_with_events([room_id], after, upto) != set()
        return _RoomTimeline(picked, limited, start)

    async def _joined_room(self, req: SyncRequest, room_id: str, since: StreamToken | None, now: StreamToken,
                           now_ms: int, *, full: bool, receipts: list[ReceiptRow],
                           account_data: list[dict[str, Any]], newly: bool = False) -> dict[str, Any] | None:
        rf = req.filter.room
        # A room joined since `since` gets its timeline as in an initial sync (the latest
        # events, limited if there are more), as Synapse does; state is then what precedes it.
        after = since.events if (since is not None and not newly) else 0
        vis = await Visibility.load(self.store, room_id, req.user_id, "join", min_pos=after + 1)
        tl = await self._timeline(room_id, after=after, upto=now.events, flt=rf.timeline, vis=vis)
        timeline = await format_events(self.store, tl.rows, device_id=req.device_id, now_ms=now_ms)
        state_ids = await self._state_ids(room_id, since, tl, full=full, filter_=rf.state, user_id=req.user_id)
        state_rows = await self.store.events_by_ids(state_ids)
        state_list = [state_rows[e] for e in state_ids if e in state_rows
                      and rf.state.allows(state_rows[e].pdu)]
        state = await format_events(self.store, state_list, device_id=req.device_id, now_ms=now_ms)
        ephemeral = self._ephemeral(req, room_id, since, receipts)
        # A complete initial timeline (nothing earlier left out) gets "now" as its
        # prev_batch, as Synapse does: /messages dir=b from it returns that history.
        start_pos = tl.start_pos if (since is not None or tl.limited) else now.events
        prev_batch = StreamToken(events=start_pos, typing=now.typing, receipts=now.receipts,
                                 to_device=now.to_device, account_data=now.account_data,
                                 device_lists=now.device_lists).to_string()
        room: dict[str, Any] = {
            "timeline": {"events": timeline, "limited": tl.limited, "prev_batch": prev_batch},
            "state": {"events": state},
            "ephemeral": {"events": ephemeral},
            "account_data": {"events": account_data},
            "unread_notifications": await self._unread(room_id, req.user_id, now.events),
        }
        if full or any(e.get("type") == "m.room.member" for e in timeline + state):
            room["summary"] = await self._summary(room_id, req.user_id)
        if since is not None and not full and not timeline and not state and not ephemeral and not account_data:
            return None
        return room

    async def _state_ids(self, room_id: str, since: StreamToken | None, tl: _RoomTimeline, *, full: bool,
                         filter_: EventFilter, user_id: str) -> list[str]:
        timeline_ids = {r.event_id for r in tl.rows}
        senders = {r.sender for r in tl.rows}
        lazy = filter_.lazy_load_members
        if full or since is None:
            current = await self.store.current_state(room_id)
            deltas = await self.store.state_deltas_after(room_id, tl.start_pos)
            st = state_at(current, deltas, tl.start_pos)
        else:
            deltas = await self.store.state_deltas_after(room_id, since.events)
            st = {}
            # Changes before the timeline starts (skipped by a limited timeline, or state
            # that came with an event rather than as one) go in `state`...
            for key in {(d.type, d.state_key) for d in deltas if d.stream_pos <= tl.start_pos}:
                _, at_start = value_at(deltas, key, tl.start_pos)
                _, at_since = value_at(deltas, key, since.events)
                if at_start is not None and at_start != at_since:
                    st[key] = at_start
            # ...and so do changes inside the timeline's range that no timeline event carries
            # (e.g. a state resolution outcome), with their latest value.
            latest: dict[tuple[str, str], StateDelta] = {}
            tl_end = (tl.rows[-1].stream_pos or 0) if tl.rows else tl.start_pos
            for d in deltas:
                if tl.start_pos < d.stream_pos <= tl_end:
                    latest[(d.type, d.state_key)] = d
            for key, d in latest.items():
                if d.event_id is not None and d.event_id not in timeline_ids:
                    st[key] = d.event_id
            if lazy:
                # Members of the timeline's senders, as of the timeline's start.
                need = [("m.room.member", s) for s in senders if ("m.room.member", s) not in st]
                unknown = []
                for key in need:
                    known, eid = value_at(deltas, key, tl.start_pos)
                    if known:
                        if eid is not None:
                            st[key] = eid
                    else:
                        unknown.append(key)
                if unknown:
                    cur = await self._current_for_keys(room_id, unknown)
                    for key in unknown:
                        if key in cur:
                            st[key] = cur[key]
        if lazy:
            keep_members = senders | {user_id}
            st = {k: v for k, v in st.items() if k[0] != "m.room.member" or k[1] in keep_members}
        return [eid for eid in st.values() if eid not in timeline_ids]

    async def _current_for_keys(self, room_id: str, keys: list[tuple[str, str]]) -> StateMap:
        return await self.store.current_state_for_keys(self.store.db, room_id, keys)

    def _ephemeral(self, req: SyncRequest, room_id: str, since: StreamToken | None,
                   receipts: list[ReceiptRow]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        ef = req.filter.room.ephemeral
        if since is None or room_id in self.typing.changed_rooms([room_id], since.typing):
            users = self.typing.users(room_id)
            if since is not None or users:
                if ef.allows({"type": "m.typing"}):
                    out.append({"type": "m.typing", "content": {"user_ids": users}})
        content: dict[str, Any] = {}
        for r in receipts:
            if r.receipt_type == "m.read.private" and r.user_id != req.user_id:
                continue
            entry: dict[str, Any] = {"ts": r.ts}
            if r.thread_id:
                entry["thread_id"] = r.thread_id
            content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = entry
        if content and ef.allows({"type": "m.receipt"}):
            out.append({"type": "m.receipt", "content": content})
        return out

    async def _unread(self, room_id: str, user_id: str, upto: int) -> dict[str, int]:
        # Simple counts: messages after the user's read receipt, not sent by them;
        # highlights are those mentioning the user's localpart.
        read_pos = await self.store.user_read_pos(room_id, user_id)
        localpart = user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id
        n, hl = await self.store.unread_counts(room_id, read_pos, upto, user_id, localpart or user_id)
        return {"notification_count": n, "highlight_count": hl}

    async def _summary(self, room_id: str, user_id: str) -> dict[str, Any]:
        members = await self.store.current_members(room_id)
        joined = sorted(u for u, m, _ in members if m == "join")
        invited = sorted(u for u, m, _ in members if m == "invite")
        counts = {"m.joined_member_count": len(joined), "m.invited_member_count": len(invited)}
        # Heroes only name rooms that have no name or canonical alias of their own (as Synapse).
        cur = await self.store.current_state_for_keys(
            self.store.db, room_id, [("m.room.name", ""), ("m.room.canonical_alias", "")])
        evs = await self.store.events_by_ids(list(cur.values())) if cur else {}
        for eid in cur.values():
            content = (evs[eid].pdu.get("content") if eid in evs else None) or {}
            if content.get("name") or content.get("alias"):
                return counts
        heroes = [u for u in joined + invited if u != user_id][:5]
        if not heroes:
            heroes = sorted(u for u, m, _ in members if m in ("leave", "ban") and u != user_id)[:5]
        return {"m.heroes": heroes, **counts}

    async def _stripped_state(self, m: MembershipRow, now_ms: int, kind: str) -> list[dict[str, Any]]:
        rows = await self.store.events_by_ids([m.event_id])
        own = rows.get(m.event_id)
        out: list[dict[str, Any]] = []
        carried = own.pdu.get("unsigned", {}).get(f"{kind}_room_state") if own else None
        if isinstance(carried, list) and carried:
            out = [e for e in carried if isinstance(e, dict)]
        else:
            current = await self.store.current_state(m.room_id)
            ids = [current[(t, "")] for t in INVITE_STATE_TYPES if (t, "") in current]
            evs = await self.store.events_by_ids(ids)
            out = [strip_to_state(evs[i].pdu) for i in ids if i in evs]
        if own is not None:
            own_ev = (await format_events(self.store, [own], device_id=None, now_ms=now_ms))[0]
            own_ev.get("unsigned", {}).pop(f"{kind}_room_state", None)
            out = [e for e in out if not (e.get("type") == "m.room.member" and e.get("state_key") == own.state_key)]
            out.append(own_ev)
        return out

    async def _invite_room(self, m: MembershipRow, now_ms: int) -> dict[str, Any]:
        return {"invite_state": {"events": await self._stripped_state(m, now_ms, "invite")}}

    async def _left_room(self, req: SyncRequest, m: MembershipRow, since: StreamToken | None, now: StreamToken,
                         now_ms: int) -> dict[str, Any] | None:
        rf = req.filter.room
        leave_pos = m.stream_pos
        after = since.events if since is not None else 0
        vis = await Visibility.load(self.store, m.room_id, req.user_id, m.membership, min_pos=after + 1)
        tl = await self._timeline(m.room_id, after=after, upto=min(leave_pos, now.events), flt=rf.timeline, vis=vis)
        timeline = await format_events(self.store, tl.rows, device_id=req.device_id, now_ms=now_ms)
        state_ids = await self._state_ids(m.room_id, since, tl, full=since is None or req.full_state,
                                          filter_=rf.state, user_id=req.user_id)
        state_rows = await self.store.events_by_ids(state_ids)
        state = await format_events(
            self.store, [state_rows[e] for e in state_ids if e in state_rows and rf.state.allows(state_rows[e].pdu)],
            device_id=req.device_id, now_ms=now_ms)
        prev_batch = StreamToken(events=tl.start_pos, typing=now.typing, receipts=now.receipts,
                                 to_device=now.to_device, account_data=now.account_data,
                                 device_lists=now.device_lists).to_string()
        return {
            "timeline": {"events": timeline, "limited": tl.limited, "prev_batch": prev_batch},
            "state": {"events": state},
            "account_data": {"events": []},
        }

    async def key_changes(self, user_id: str, from_: StreamToken, to: StreamToken) -> dict[str, list[str]]:
        """GET /keys/changes: the device_lists a /sync from `from_` to `to` would report."""
        now = self.current_token()
        to = dataclasses.replace(to, events=min(to.events, now.events),
                                 device_lists=min(to.device_lists, now.device_lists))
        from_ = dataclasses.replace(from_, events=min(from_.events, to.events),
                                    device_lists=min(from_.device_lists, to.device_lists))
        memberships = await self.store.rooms_for_user(user_id)
        changes: dict[str, list[StateDelta]] = {}
        for d in await self.store.membership_changes(user_id, from_.events, to.events):
            changes.setdefault(d.room_id, []).append(d)
        joined_ids = [m.room_id for m in memberships if m.membership == "join"]
        return await self._device_lists(user_id, from_, to, joined_ids, memberships, changes)

    async def _device_lists(self, user_id: str, since: StreamToken | None, now: StreamToken, joined_ids: list[str],
                            memberships: list[MembershipRow], changes: dict[str, list[StateDelta]]
                            ) -> dict[str, list[str]]:
        """Users whose devices the client must (re)fetch, and users it no longer shares a room with."""
        out: dict[str, list[str]] = {"changed": [], "left": []}
        if since is None:
            return out
        all_joined = [m.room_id for m in memberships if m.membership == "join"]
        key_changed = (await self.store.device_list_changes(since.device_lists, now.device_lists)
                       if since.device_lists < now.device_lists else [])
        member_deltas = (await self.store.member_deltas_in(all_joined, since.events, now.events)
                         if since.events < now.events else [])
        own_left = [r for r, ds in changes.items() if ds and ds[-1].membership in ("leave", "ban")]
        if not key_changed and not member_deltas and not own_left:
            return out
        shared = await self.store.joined_members_of(all_joined)
        changed = {u for u in key_changed if u in shared}
        newly_joined_rooms = {r for r, ds in changes.items() if any(d.membership == "join" for d in ds)
                              and r in all_joined}
        if newly_joined_rooms:
            changed |= await self.store.joined_members_of(list(newly_joined_rooms))
        left: set[str] = set()
        for d in member_deltas:
            if d.state_key == user_id:
                continue
            if d.membership == "join":
                changed.add(d.state_key)
            elif d.state_key not in shared:
                left.add(d.state_key)
        if own_left:
            left |= {u for u in await self.store.joined_members_of(own_left) if u not in shared}
        left.discard(user_id)
        # The user's own device changes are reported too (a new login, a deleted device).
        out["changed"] = sorted((changed & shared) - {user_id} | ({user_id} & set(key_changed)))
        out["left"] = sorted(left - changed)
        return out

    async def _to_device(self, req: SyncRequest, since: StreamToken | None, now: StreamToken
                         ) -> tuple[list[dict[str, Any]], int]:
        if req.device_id is None:
            return [], now.to_device
        after = since.to_device if since is not None else 0
        if since is not None and after > self._to_device_acked.get((req.user_id, req.device_id), 0):
            # The client has these: it synced with a token beyond them. (Once per
            # position: repeating the delete on every long-poll is a write per /sync.)
            await self.store.delete_to_device_upto(req.user_id, req.device_id, after)
            self._to_device_acked[(req.user_id, req.device_id)] = after
        if after >= now.to_device:
            return [], now.to_device
        msgs = await self.store.to_device_messages(req.user_id, req.device_id, after, now.to_device, MAX_TO_DEVICE)
        pos = msgs[-1].stream_pos if len(msgs) == MAX_TO_DEVICE else now.to_device
        return [{"sender": m.sender, "type": m.type, "content": m.content} for m in msgs], pos

