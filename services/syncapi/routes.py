"""The syncapi's client routes (v3 and the r0 aliases): /sync, /messages, /context,
/members, /joined_members. Responses are plain dicts; every error is a MatrixError."""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, invalid_param
from services.syncapi.filters import EventFilter, FilterError, SyncFilter
from services.syncapi.history import History
from services.syncapi.presence import PresenceTracker
from services.syncapi.streams import BadToken, parse_token
from services.syncapi.sync import SyncEngine, SyncRequest
from services.userapi.api import Device, UserAPI

AuthDependency = Callable[[Request], Awaitable[Device]]
MAX_TIMEOUT_MS = 5 * 60 * 1000
PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_param(f"'{name}' must be an integer") from None


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0", ""):
        return False
    raise invalid_param(f"'{name}' must be true or false")


def _json_param(raw: str, name: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise invalid_param(f"'{name}' is not valid JSON") from None


def build_routers(engine: SyncEngine, history: History, userapi: UserAPI, auth: AuthDependency,
                  presence: PresenceTracker | None = None) -> list[APIRouter]:
    routers: list[APIRouter] = []
    for prefix in PREFIXES:
        r = APIRouter(prefix=prefix)

        @r.get("/sync")
        async def sync(request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
            since_raw = request.query_params.get("since")
            try:
                since = parse_token(since_raw) if since_raw else None
            except BadToken:
                raise invalid_param("Invalid 'since' token") from None
            timeout = max(0, min(_int_param(request, "timeout", 0), MAX_TIMEOUT_MS))
            full_state = _bool_param(request, "full_state")
            set_presence = request.query_params.get("set_presence")
            if set_presence is not None and set_presence not in ("online", "offline", "unavailable"):
                raise invalid_param("'set_presence' must be online, offline or unavailable")
            if presence is not None and not getattr(device, "is_guest", False):
                await presence.on_sync(device.user_id, set_presence)
            flt = SyncFilter()
            raw = request.query_params.get("filter")
            if raw:
                obj: Any
                if raw.lstrip().startswith("{"):
                    obj = _json_param(raw, "filter")
                else:
                    obj = await userapi.get_filter(device.user_id, raw)
                    if obj is None:
                        raise invalid_param("No such filter")
                try:
                    flt = SyncFilter.parse(obj)
                except FilterError as e:
                    raise invalid_param(f"Invalid filter: {e}") from None
            return await engine.sync(SyncRequest(
                user_id=device.user_id, device_id=device.device_id, since=since, timeout_ms=timeout,
                full_state=full_state, filter=flt))

        @r.get("/rooms/{room_id}/messages")
        async def messages(room_id: str, request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
            q = request.query_params
            flt = EventFilter()
            if q.get("filter"):
                try:
                    flt = EventFilter.parse(_json_param(q["filter"], "filter"))
                except FilterError as e:
                    raise invalid_param(f"Invalid filter: {e}") from None
            limit = _int_param(request, "limit", 10)
            if flt.limit is not None and "limit" not in q:
                limit = flt.limit
            return await history.messages(room_id, device.user_id, device.device_id, from_=q.get("from"),
                                          to=q.get("to"), dir_=q.get("dir", "b"), limit=limit, flt=flt)

        @r.get("/rooms/{room_id}/event/{event_id}")
        async def event(room_id: str, event_id: str, device: Device = Depends(auth)) -> dict[str, Any]:
            return await history.event(room_id, event_id, device.user_id, device.device_id)

        @r.get("/rooms/{room_id}/context/{event_id}")
        async def context(room_id: str, event_id: str, request: Request,
                          device: Device = Depends(auth)) -> dict[str, Any]:
            q = request.query_params
            flt = EventFilter()
            if q.get("filter"):
                try:
                    flt = EventFilter.parse(_json_param(q["filter"], "filter"))
                except FilterError as e:
                    raise invalid_param(f"Invalid filter: {e}") from None
            return await history.context(room_id, event_id, device.user_id, device.device_id,
                                         limit=_int_param(request, "limit", 10), flt=flt)

        @r.get("/rooms/{room_id}/members")
        async def members(room_id: str, request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
            q = request.query_params
            return await history.members(room_id, device.user_id, at=q.get("at"), membership=q.get("membership"),
                                         not_membership=q.get("not_membership"))

        @r.get("/keys/changes")
        async def keys_changes(request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
            toks = []
            for p in ("from", "to"):
                raw = request.query_params.get(p)
                if not raw:
                    raise MatrixError(400, "M_MISSING_PARAM", f"Missing {p}")
                try:
                    toks.append(parse_token(raw))
                except BadToken:
                    raise invalid_param(f"Invalid '{p}' token") from None
            return await engine.key_changes(device.user_id, toks[0], toks[1])

        @r.get("/rooms/{room_id}/joined_members")
        async def joined_members(room_id: str, device: Device = Depends(auth)) -> dict[str, Any]:
            return await history.joined_members(room_id, device.user_id)

        routers.append(r)
    return routers
