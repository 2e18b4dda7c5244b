"""/messages, /context, /members and /joined_members, from the syncapi's projection.

Pagination tokens are stream tokens (`s<events>_...`): a token at position P sits
between P and P+1, so `dir=b` from P returns events at positions <= P and `dir=f`
returns events > P. `prev_batch` of a /sync timeline chains into `dir=b` with no
gaps or duplicates.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from libs.errors import MatrixError, forbidden, invalid_param, not_found
from services.syncapi.api import StreamToken
from services.syncapi.filters import EventFilter
from services.syncapi.storage.store import EventRow, SyncStore
from services.syncapi.streams import BadToken, Positions, parse_token
from services.syncapi.views import Visibility, format_events, state_at

MAX_SCAN = 2000
# Below every position: backfilled history sits at negative positions (services/syncapi/backfill.py).
HISTORY_FLOOR = -(10 ** 17)  # (a token's events position has at most 18 digits)
# Outbound backfills one /messages page may trigger.
MAX_BACKFILLS_PER_PAGE = 2

Backfiller = Callable[[str, int], Awaitable[int]]


def _token_pos(text: str) -> int:
    try:
        return parse_token(text).events
    except BadToken:
        raise invalid_param(f"Invalid pagination token {text!r}") from None


class History:
    def __init__(self, store: SyncStore, positions: Positions, clock_ms: Callable[[], int] | None = None,
                 backfill: Backfiller | None = None) -> None:
        self.store = store
        self.positions = positions
        # (room_id, limit) -> events added before the room's start (None: no federation).
        self.backfill = backfill
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))

    async def _membership(self, room_id: str, user_id: str) -> str | None:
        state = await self.store.current_state_for_keys(self.store.db, room_id, [("m.room.member", user_id)])
        eid = state.get(("m.room.member", user_id))
        if eid is None:
            return None
        rows = await self.store.events_by_ids([eid])
        m = rows[eid].pdu.get("content", {}).get("membership") if eid in rows else None
        return m if isinstance(m, str) else None

    async def _world_readable(self, room_id: str) -> bool:
        state = await self.store.current_state_for_keys(self.store.db, room_id, [("m.room.history_visibility", "")])
        eid = state.get(("m.room.history_visibility", ""))
        if eid is None:
            return False
        rows = await self.store.events_by_ids([eid])
        return eid in rows and rows[eid].pdu.get("content", {}).get("history_visibility") == "world_readable"

    async def _visibility(self, room_id: str, user_id: str) -> Visibility:
        """The requester's visibility in the room; 403 if they never had any access."""
        membership = await self._membership(room_id, user_id)
        vis = await Visibility.load(self.store, room_id, user_id, membership)
        if membership is None and not vis.member_pos and not await self._world_readable(room_id):
            if await self.store.room_version(room_id) is None:
                raise forbidden("You are not a member of this room")  # unknown room: do not leak existence
            raise forbidden("You are not a member of this room")
        return vis

    async def _lazy_members(self, room_id: str, rows: list[EventRow], device_id: str | None, now_ms: int,
                            user_id: str) -> list[dict[str, Any]]:
        senders = sorted({r.sender for r in rows})
        if not senders:
            return []
        cur = await self.store.current_state_for_keys(
            self.store.db, room_id, [("m.room.member", s) for s in senders])
        evs = await self.store.events_by_ids(list(cur.values()))
        return await format_events(self.store, [evs[e] for e in cur.values() if e in evs],
                                   device_id=device_id, now_ms=now_ms, include_room_id=True)

    async def messages(self, room_id: str, user_id: str, device_id: str | None, *, from_: str | None,
                       to: str | None, dir_: str, limit: int, flt: EventFilter) -> dict[str, Any]:
        if dir_ not in ("b", "f"):
            raise invalid_param("dir must be 'b' or 'f'")
        limit = max(0, min(limit, 1000))
        vis = await self._visibility(room_id, user_id)
        ignored = await self.store.ignored_users(user_id)
        if ignored:
            flt = dataclasses.replace(flt, not_senders=list(flt.not_senders) + sorted(ignored))
        now = self.positions.events
        backwards = dir_ == "b"
        start = _token_pos(from_) if from_ else (now if backwards else HISTORY_FLOOR)
        bound = _token_pos(to) if to else None
        picked: list[EventRow] = []
        cursor = start
        scanned = 0
        more = False
        backfills = 0
        if limit > 0 and flt.allows_room(room_id):
            while True:
                batch = max(limit + 1, 20)
                if backwards:
                    rows = await self.store.room_events(room_id,
                                                        after=bound if bound is not None else HISTORY_FLOOR,
                                                        upto=cursor, limit=batch, backwards=True)
                else:
                    rows = await self.store.room_events(room_id, after=cursor,
                                                        upto=bound if bound is not None else now,
                                                        limit=batch, backwards=False)
                if rows:
                    await vis.prepare(self.store, min(r.stream_pos or 0 for r in rows))
                for r in rows:
                    if len(picked) == limit:
                        more = True
                        break
                    cursor = (r.stream_pos or 0) - 1 if backwards else (r.stream_pos or 0)
                    if flt.allows(r.pdu) and vis.filter([r]):
                        picked.append(r)
                scanned += len(rows)
                if (backwards and not more and len(rows) < batch and bound is None and self.backfill is not None
                        and backfills < MAX_BACKFILLS_PER_PAGE and scanned < MAX_SCAN):
                    # The start of what we hold: older history may be at another server.
                    backfills += 1
                    if await self.backfill(room_id, max(limit - len(picked), 10) + 1) > 0:
                        continue
                if more or len(rows) < batch:
                    break
                if scanned >= MAX_SCAN:
                    more = True
                    break
        now_ms = self.clock_ms()
        chunk = await format_events(self.store, picked, device_id=device_id, now_ms=now_ms, include_room_id=True)
        resp: dict[str, Any] = {"chunk": chunk, "start": from_ or StreamToken(events=start).to_string()}
        # `end` whenever something was returned, either way (as Synapse; the next, empty page ends it).
        if more or picked:
            resp["end"] = StreamToken(events=cursor).to_string()
        if flt.lazy_load_members:
            resp["state"] = await self._lazy_members(room_id, picked, device_id, now_ms, user_id)
        return resp

    async def event(self, room_id: str, event_id: str, user_id: str, device_id: str | None) -> dict[str, Any]:
        """GET /rooms/{roomId}/event/{eventId}: the event as the user may see it (redacted
        if it was); 404 when it does not exist or history visibility hides it."""
        try:
            vis = await self._visibility(room_id, user_id)
        except MatrixError:
            raise not_found("Event not found") from None
        ev = (await self.store.events_by_ids([event_id])).get(event_id)
        if ev is None or ev.room_id != room_id or ev.stream_pos is None:
            raise not_found("Event not found")
        await vis.prepare(self.store, ev.stream_pos)
        if not vis.filter([ev]):
            raise not_found("Event not found")
        return (await format_events(self.store, [ev], device_id=device_id, now_ms=self.clock_ms(),
                                    include_room_id=True))[0]

    async def context(self, room_id: str, event_id: str, user_id: str, device_id: str | None, *, limit: int,
                      flt: EventFilter) -> dict[str, Any]:
        vis = await self._visibility(room_id, user_id)
        await vis.prepare(self.store, None)  # the target and its neighbours can be anywhere in history
        rows = await self.store.events_by_ids([event_id])
        ev = rows.get(event_id)
        if ev is None or ev.room_id != room_id or ev.stream_pos is None or not vis.filter([ev]):
            raise not_found("Event not found")
        limit = max(0, min(limit, 1000))
        half_b, half_a = limit // 2, limit - limit // 2
        pos = ev.stream_pos
        before = [r for r in await self.store.room_events(room_id, after=HISTORY_FLOOR, upto=pos - 1, limit=max(half_b, 0),
                                                          backwards=True) if flt.allows(r.pdu)]
        after = [r for r in await self.store.room_events(room_id, after=pos, upto=self.positions.events,
                                                         limit=max(half_a, 0), backwards=False) if flt.allows(r.pdu)]
        before, after = vis.filter(before), vis.filter(after)
        now_ms = self.clock_ms()
        start_pos = (min(r.stream_pos or pos for r in before) - 1) if before else pos - 1
        end_pos = max(r.stream_pos or pos for r in after) if after else pos
        current = await self.store.current_state(room_id)
        st = state_at(current, await self.store.state_deltas_after(room_id, pos), pos)
        if flt.lazy_load_members:
            senders = {r.sender for r in before + after + [ev]}
            st = {k: v for k, v in st.items() if k[0] != "m.room.member" or k[1] in senders}
        srows = await self.store.events_by_ids(list(st.values()))
        fmt = lambda rs: format_events(self.store, rs, device_id=device_id, now_ms=now_ms,  # noqa: E731
                                       include_room_id=True)
        return {
            "event": (await fmt([ev]))[0],
            "events_before": await fmt(before),
            "events_after": await fmt(after),
            "state": await fmt([srows[e] for e in st.values() if e in srows]),
            "start": StreamToken(events=start_pos).to_string(),
            "end": StreamToken(events=end_pos).to_string(),
        }

    async def members(self, room_id: str, user_id: str, *, at: str | None, membership: str | None,
                      not_membership: str | None) -> dict[str, Any]:
        current_m = await self._membership(room_id, user_id)
        vis = await self._visibility(room_id, user_id)
        current = await self.store.current_state(room_id)
        pos: int | None = None
        if at:
            pos = _token_pos(at)
        if current_m != "join" and vis.member_pos:
            # Former members see the list as it was when they left.
            leave_pos = vis.member_pos[-1]
            pos = leave_pos if pos is None else min(pos, leave_pos)
        st = current if pos is None else state_at(current, await self.store.state_deltas_after(
            room_id, pos, types=["m.room.member"]), pos)
        ids = [v for k, v in st.items() if k[0] == "m.room.member"]
        rows = await self.store.events_by_ids(ids)
        picked = []
        for eid in ids:
            r = rows.get(eid)
            if r is None:
                continue
            m = r.pdu.get("content", {}).get("membership")
            if membership is not None and m != membership:
                continue
            if not_membership is not None and m == not_membership:
                continue
            picked.append(r)
        return {"chunk": await format_events(self.store, picked, device_id=None, now_ms=self.clock_ms(),
                                             include_room_id=True)}

    async def joined_members(self, room_id: str, user_id: str) -> dict[str, Any]:
        if await self._membership(room_id, user_id) != "join":
            raise forbidden("You aren't a member of the room")
        members = [(u, e) for u, m, e in await self.store.current_members(room_id) if m == "join"]
        rows = await self.store.events_by_ids([e for _, e in members])
        joined: dict[str, Any] = {}
        for u, e in members:
            c = rows[e].pdu.get("content", {}) if e in rows else {}
            joined[u] = {"display_name": c.get("displayname") if isinstance(c.get("displayname"), str) else None,
                         "avatar_url": c.get("avatar_url") if isinstance(c.get("avatar_url"), str) else None}
        return {"joined": joined}


__all__ = ["History", "MatrixError"]
