"""The deprecated pre-/sync APIs, built on the /sync engine (same tokens, same visibility):

* `GET /events?from=&timeout=[&room_id=]`: a flat stream of what /sync would return
  after `from` (timeline events, typing/receipts with their `room_id`, invites,
  presence); without `from` it starts now. `{"chunk", "start", "end"}`.
* `GET /initialSync[?limit=&archived=]`: every room of the user with its state and
  latest messages, the user's presence and that of the people they share rooms with,
  global account data.
* `GET /rooms/{roomId}/initialSync`: the same for one room (members see it; anyone
  may see a `world_readable` room's current state).

Old clients and SyTest's fixtures use them; new features do not go here.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, invalid_param
from services.syncapi.api import StreamToken
from services.syncapi.filters import SyncFilter
from services.syncapi.routes import AuthDependency, MAX_TIMEOUT_MS, PREFIXES, _bool_param, _int_param
from services.syncapi.streams import BadToken, parse_token
from services.syncapi.sync import SyncEngine, SyncRequest
from services.userapi.api import Device

# /events has no pagination of its own: a generous timeline per room per call.
EVENTS_TIMELINE_LIMIT = 200


def _with_room(ev: dict[str, Any], room_id: str) -> dict[str, Any]:
    return {**ev, "room_id": room_id}


def _legacy_presence(ev: dict[str, Any]) -> dict[str, Any]:
    return {**ev, "content": {**ev.get("content", {}), "user_id": ev.get("sender")}}


def flatten_sync(resp: dict[str, Any], room_id: str | None = None) -> list[dict[str, Any]]:
    """A /sync response as the flat /events chunk."""
    out: list[dict[str, Any]] = []
    rooms = resp.get("rooms", {})
    for rid, room in rooms.get("invite", {}).items():
        if room_id is None or rid == room_id:
            out += [_with_room(e, rid) for e in room.get("invite_state", {}).get("events", [])
                    if "event_id" in e]  # the invite itself, not the stripped state
    for section in ("join", "leave"):
        for rid, room in rooms.get(section, {}).items():
            if room_id is not None and rid != room_id:
                continue
            out += [_with_room(e, rid) for e in room.get("timeline", {}).get("events", [])]
            out += [_with_room(e, rid) for e in room.get("ephemeral", {}).get("events", [])]
    if room_id is None:
        out += [_legacy_presence(e) for e in resp.get("presence", {}).get("events", [])]
    return out


def _room_entry(room_id: str, membership: str, room: dict[str, Any], start: str, end: str) -> dict[str, Any]:
    tl = room.get("timeline", {})
    chunk = [_with_room(e, room_id) for e in tl.get("events", [])]
    state = {(e["type"], e.get("state_key")): e for e in room.get("state", {}).get("events", [])}
    for e in tl.get("events", []):  # current state = state before the timeline + its state events
        if "state_key" in e:
            state[(e["type"], e["state_key"])] = e
    entry: dict[str, Any] = {
        "room_id": room_id,
        "membership": membership,
        "messages": {"chunk": chunk, "start": tl.get("prev_batch", start), "end": end},
        "state": [_with_room(e, room_id) for e in state.values()],
        "account_data": room.get("account_data", {}).get("events", []),
    }
    jr = state.get(("m.room.join_rules", ""))
    entry["visibility"] = "public" if jr and jr.get("content", {}).get("join_rule") == "public" else "private"
    return entry


def build_legacy_routers(engine: SyncEngine, auth: AuthDependency) -> list[APIRouter]:
    routers: list[APIRouter] = []

    def _limit_filter(limit: int) -> SyncFilter:
        return SyncFilter.parse({"room": {"timeline": {"limit": max(0, min(limit, 1000))},
                                          "include_leave": False}})

    for prefix in PREFIXES:
        r = APIRouter(prefix=prefix)

        @r.get("/events")
        async def events(request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
            q = request.query_params
            raw = q.get("from")
            try:
                since = parse_token(raw) if raw else engine.current_token()
            except BadToken:
                raise invalid_param("Invalid 'from' token") from None
            timeout = max(0, min(_int_param(request, "timeout", 30000), MAX_TIMEOUT_MS))
            room_id = q.get("room_id")
            resp = await engine.sync(SyncRequest(
                user_id=device.user_id, device_id=device.device_id, since=since, timeout_ms=timeout,
                filter=_limit_filter(EVENTS_TIMELINE_LIMIT)))
            return {"chunk": flatten_sync(resp, room_id), "start": raw or since.to_string(),
                    "end": resp["next_batch"]}

        @r.get("/initialSync")
        async def initial_sync(request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
            limit = _int_param(request, "limit", 10)
            archived = _bool_param(request, "archived")
            flt = _limit_filter(limit)
            flt.room.include_leave = archived
            resp, _ = await engine.build(SyncRequest(user_id=device.user_id, device_id=device.device_id,
                                                     filter=flt))
            end = resp["next_batch"]
            start = StreamToken().to_string()
            rooms = resp["rooms"]
            out_rooms = [_room_entry(rid, "join", room, start, end) for rid, room in rooms["join"].items()]
            out_rooms += [_room_entry(rid, "leave", room, start, end) for rid, room in rooms["leave"].items()]
            for rid, room in rooms["invite"].items():
                invite = [e for e in room["invite_state"]["events"] if "event_id" in e]
                entry: dict[str, Any] = {"room_id": rid, "membership": "invite",
                                         "invite": [_with_room(e, rid) for e in invite],
                                         "state": [_with_room(e, rid) for e in room["invite_state"]["events"]]}
                if invite:
                    entry["inviter"] = invite[-1].get("sender")
                out_rooms.append(entry)
            presence = [_legacy_presence(e) for e in resp["presence"]["events"]]
            if not any(e["sender"] == device.user_id for e in presence):
                # Never set: the user is offline, and still sees themselves.
                presence.append({"type": "m.presence", "sender": device.user_id,
                                 "content": {"presence": "offline", "last_active_ago": 0,
                                             "user_id": device.user_id}})
            return {"end": end, "rooms": out_rooms, "presence": presence,
                    "account_data": resp["account_data"]["events"], "receipts": []}

        @r.get("/rooms/{room_id}/initialSync")
        async def room_initial_sync(room_id: str, request: Request, device: Device = Depends(auth)
                                    ) -> dict[str, Any]:
            limit = _int_param(request, "limit", 10)
            flt = SyncFilter.parse({"room": {"rooms": [room_id], "timeline": {"limit": max(0, min(limit, 1000))},
                                             "include_leave": True}})
            resp, _ = await engine.build(SyncRequest(user_id=device.user_id, device_id=device.device_id,
                                                     filter=flt))
            end = resp["next_batch"]
            rooms = resp["rooms"]
            for membership in ("join", "leave"):
                if room_id in rooms[membership]:
                    room = rooms[membership][room_id]
                    entry = _room_entry(room_id, membership, room, StreamToken().to_string(), end)
                    ephemeral = room.get("ephemeral", {}).get("events", [])
                    entry["receipts"] = [e for e in ephemeral if e.get("type") == "m.receipt"]
                    entry["presence"] = [_legacy_presence(e) for e in resp["presence"]["events"]]
                    return entry
            raise MatrixError(403, "M_FORBIDDEN", f"User {device.user_id} not in room {room_id}")

        routers.append(r)
    return routers
