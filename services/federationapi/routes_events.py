"""Federation read routes over the roomserver's event graph: /event, /state,
/state_ids, /event_auth, /backfill, /get_missing_events.

Who may read: a server with a user joined to the room in its CURRENT state (not "at
that event": simpler, and stricter for servers that left), or anyone when the room's
current history visibility is world_readable. Everything else is 403 M_FORBIDDEN;
unknown rooms and events are 404 M_NOT_FOUND. Events of /event, /backfill and
/get_missing_events that the server could not see then (history visibility of the state
before each: `invited`/`joined` without one of its users invited/joined) come redacted.
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Depends, Query, Request

from libs.errors import bad_json, forbidden, not_found
from libs.events.hashes import compute_event_id
from libs.events.redaction import redact
from libs.events.room_versions import EventFormat, UnsupportedRoomVersion, get_room_version
from services.roomserver.api import RoomserverAPI

from .acl import ACL_EVENT_TYPE, server_acl_allows
from .auth import FederationAuth

MAX_BACKFILL = 100
MAX_MISSING = 100


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def build_events_router(server_name: str, auth: FederationAuth, roomserver: RoomserverAPI) -> APIRouter:
    router = APIRouter(prefix="/_matrix/federation/v1")
    origin_dep: Callable[[Request], Awaitable[str]] = auth

    async def check_access(origin: str, room_id: str) -> None:
        if await roomserver.get_room_version(room_id) is None:
            raise not_found(f"unknown room {room_id}")
        acl = await roomserver.get_state_event(room_id, ACL_EVENT_TYPE, "")
        if acl is not None and not server_acl_allows(acl.get("content"), origin):
            raise forbidden(f"{origin} is denied by the room's server ACL")
        if any(_domain(m) == origin for m in await roomserver.get_joined_members(room_id)):
            return
        hv = await roomserver.get_state_event(room_id, "m.room.history_visibility", "")
        if hv is not None and (hv.get("content") or {}).get("history_visibility") == "world_readable":
            return
        raise forbidden(f"{origin} is not in room {room_id}")

    def now_ms() -> int:
        return int(time.time() * 1000)

    async def visible(origin: str, room_id: str, pdus: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`pdus`, with the events `origin` may not see (history visibility) redacted."""
        version = await roomserver.get_room_version(room_id)
        try:
            rv = get_room_version(version or "")
        except UnsupportedRoomVersion:
            return pdus

        def eid(p: dict[str, Any]) -> str:
            return str(p.get("event_id")) if rv.event_format is EventFormat.V1 else compute_event_id(p, rv)

        ids = [eid(p) for p in pdus]
        ok = set(await roomserver.events_visible_to_server(origin, ids)) if ids else set()
        return [p if i in ok else redact(p, rv) for p, i in zip(pdus, ids)]

    @router.get("/event/{event_id}")
    async def get_event(event_id: str, origin: str = Depends(origin_dep)) -> dict[str, Any]:
        got = await roomserver.get_pdu(event_id)
        if got is None:
            raise not_found("unknown event")
        _version, pdu = got
        room_id = pdu.get("room_id")
        if not isinstance(room_id, str):
            # A v12 create event names no room: its room ID is derived from its ID.
            room_id = "!" + event_id[1:]
        await check_access(origin, room_id)
        return {"origin": server_name, "origin_server_ts": now_ms(), "pdus": await visible(origin, room_id, [pdu])}

    @router.get("/state/{room_id}")
    async def get_state(room_id: str, event_id: str | None = None,
                        origin: str = Depends(origin_dep)) -> dict[str, Any]:
        if not event_id:
            raise bad_json("event_id is required")
        await check_access(origin, room_id)
        res = await roomserver.get_state_and_auth_chain(room_id, event_id)
        return {"pdus": res.state, "auth_chain": res.auth_chain}

    @router.get("/state_ids/{room_id}")
    async def get_state_ids(room_id: str, event_id: str | None = None,
                            origin: str = Depends(origin_dep)) -> dict[str, Any]:
        if not event_id:
            raise bad_json("event_id is required")
        await check_access(origin, room_id)
        pdu_ids, chain_ids = await roomserver.get_state_ids_and_auth_chain_ids(room_id, event_id)
        return {"pdu_ids": pdu_ids, "auth_chain_ids": chain_ids}

    @router.get("/event_auth/{room_id}/{event_id}")
    async def get_event_auth(room_id: str, event_id: str, origin: str = Depends(origin_dep)) -> dict[str, Any]:
        await check_access(origin, room_id)
        got = await roomserver.get_pdu(event_id)
        if got is None or (got[1].get("room_id") not in (room_id, None)):
            raise not_found("unknown event")
        return {"auth_chain": await roomserver.get_auth_chain([event_id])}

    @router.get("/backfill/{room_id}")
    async def backfill(room_id: str, v: list[str] = Query(default_factory=list), limit: int = 10,
                       origin: str = Depends(origin_dep)) -> dict[str, Any]:
        if not v:
            raise bad_json("v (the events to backfill from) is required")
        await check_access(origin, room_id)
        pdus = await roomserver.backfill(room_id, v[:20], max(0, min(limit, MAX_BACKFILL)))
        return {"origin": server_name, "origin_server_ts": now_ms(), "pdus": await visible(origin, room_id, pdus)}

    @router.post("/get_missing_events/{room_id}")
    async def get_missing_events(room_id: str, request: Request, origin: str = Depends(origin_dep)) -> dict[str, Any]:
        body = request.state.federation_body
        await check_access(origin, room_id)  # first: a denied server learns nothing else
        if not isinstance(body, dict):
            raise bad_json("body must be an object")
        earliest, latest = body.get("earliest_events", []), body.get("latest_events", [])
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        if not isinstance(earliest, list) or not all(isinstance(e, str) for e in earliest) \
                or not isinstance(latest, list) or not all(isinstance(e, str) for e in latest):
            raise bad_json("earliest_events and latest_events must be lists of event IDs")
        if isinstance(limit, bool) or not isinstance(limit, int) or isinstance(min_depth, bool) \
                or not isinstance(min_depth, int):
            raise bad_json("limit and min_depth must be integers")
        if not latest:
            return {"events": []}  # nothing to walk back from
        events = await roomserver.get_missing_events(room_id, earliest[:200], latest[:20],
                                                     max(0, min(limit, MAX_MISSING)), max(0, min_depth))
        return {"events": await visible(origin, room_id, events)}

    return router
