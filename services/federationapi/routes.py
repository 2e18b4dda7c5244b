"""Federation HTTP routes: /send, the cheap queries, publicRooms and the notary endpoints."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from libs.http import read_json_body
from services.roomserver.api import RoomserverAPI
from services.userapi.api import UserAPI

from .auth import FederationAuth
from .discovery import parse_server_name
from .keyring import KeyRing
from .storage.store import FederationStore
from .transactions import TransactionProcessor

MAX_KEY_QUERY_SERVERS = 100
MAX_KEY_QUERY_USERS = 1000
MAX_KEY_QUERY_DEVICES = 10000


@dataclass
class FederationRoutesContext:
    server_name: str
    auth: FederationAuth
    keyring: KeyRing
    transactions: TransactionProcessor
    roomserver: RoomserverAPI | None
    userapi: UserAPI | None
    # Our device-list update chain per user (edus.py): /user/devices answers its stream_id.
    store: FederationStore | None = None


def _domain(identifier: str) -> str:
    return identifier.split(":", 1)[1] if ":" in identifier else ""


def _int_or_none(v: Any, name: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_json(f"{name} must be an integer")
    return v


def public_room_entry(room_id: str, state: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    def c(t: str) -> dict[str, Any]:
        ev = state.get((t, ""))
        content = ev.get("content") if ev else None
        return content if isinstance(content, dict) else {}

    members = sum(1 for (t, _), ev in state.items()
                  if t == "m.room.member" and (ev.get("content") or {}).get("membership") == "join")
    out: dict[str, Any] = {
        "room_id": room_id, "num_joined_members": members,
        "world_readable": c("m.room.history_visibility").get("history_visibility") == "world_readable",
        "guest_can_join": c("m.room.guest_access").get("guest_access") == "can_join",
        "join_rule": c("m.room.join_rules").get("join_rule", "invite"),
    }
    for key, t, f in (("name", "m.room.name", "name"), ("topic", "m.room.topic", "topic"),
                      ("canonical_alias", "m.room.canonical_alias", "alias"), ("avatar_url", "m.room.avatar", "url")):
        v = c(t).get(f)
        if isinstance(v, str) and v:
            out[key] = v
    if isinstance(c("m.room.create").get("type"), str):
        out["room_type"] = c("m.room.create")["type"]
    return out


def build_key_router(keyring: KeyRing) -> APIRouter:
    """Notary endpoints (no request authentication: key queries are public)."""
    router = APIRouter()

    @router.post("/_matrix/key/v2/query")
    async def key_query(request: Request) -> dict[str, Any]:
        body = await read_json_body(request, 256 * 1024)
        wanted = body.get("server_keys")
        if not isinstance(wanted, dict):
            raise bad_json("server_keys must be an object")
        if len(wanted) > MAX_KEY_QUERY_SERVERS:
            raise MatrixError(400, "M_TOO_LARGE", f"At most {MAX_KEY_QUERY_SERVERS} servers per query")
        out: list[dict[str, Any]] = []
        for server, criteria in wanted.items():
            if not isinstance(criteria, dict):
                raise bad_json("server_keys values must be objects")
            try:
                parse_server_name(server)
            except ValueError:
                continue
            mins = []
            for c in criteria.values():
                if isinstance(c, dict):
                    m = _int_or_none(c.get("minimum_valid_until_ts"), "minimum_valid_until_ts")
                    if m is not None:
                        mins.append(m)
            out += await keyring.notary_response(server, max(mins) if mins else None)
        return {"server_keys": out}

    @router.get("/_matrix/key/v2/query/{server_name}")
    async def key_query_one(server_name: str, minimum_valid_until_ts: int | None = None) -> dict[str, Any]:
        try:
            parse_server_name(server_name)
        except ValueError:
            raise invalid_param("Invalid server name") from None
        return {"server_keys": await keyring.notary_response(server_name, minimum_valid_until_ts)}

    # Deprecated form with a key ID: the key ID does not narrow the answer.
    @router.get("/_matrix/key/v2/query/{server_name}/{key_id}")
    async def key_query_one_id(server_name: str, key_id: str,
                               minimum_valid_until_ts: int | None = None) -> dict[str, Any]:
        return await key_query_one(server_name, minimum_valid_until_ts)

    return router


def build_federation_router(ctx: FederationRoutesContext) -> APIRouter:
    router = APIRouter(prefix="/_matrix/federation/v1")
    auth: Callable[[Request], Awaitable[str]] = ctx.auth

    @router.put("/send/{txn_id}")
    async def send_transaction(txn_id: str, request: Request, origin: str = Depends(auth)) -> dict[str, Any]:
        body = request.state.federation_body
        if body is None:
            raise bad_json("Transaction body missing")
        return await ctx.transactions.handle(origin, txn_id, body)

    @router.get("/query/profile")
    async def query_profile(user_id: str | None = None, field: str | None = None,
                            origin: str = Depends(auth)) -> dict[str, Any]:
        if not user_id:
            raise missing_param("user_id is required")
        if field is not None and field not in ("displayname", "avatar_url"):
            raise invalid_param("field must be displayname or avatar_url")
        if not user_id.startswith("@") or _domain(user_id) != ctx.server_name:
            raise invalid_param("User is not local to this server")
        profile = await ctx.userapi.get_profile(user_id) if ctx.userapi is not None else None
        if profile is None:
            raise not_found("Profile not found")
        out = {k: v for k, v in profile.items() if k in ("displayname", "avatar_url") and v is not None}
        if field is not None:
            return {field: out[field]} if field in out else {}
        return out

    @router.get("/query/directory")
    async def query_directory(room_alias: str | None = None, origin: str = Depends(auth)) -> dict[str, Any]:
        if not room_alias:
            raise missing_param("room_alias is required")
        if not room_alias.startswith("#") or _domain(room_alias) != ctx.server_name:
            raise not_found("Room alias not found")
        if ctx.roomserver is None:
            raise not_found("Room alias not found")
        room_id = await ctx.roomserver.resolve_alias(room_alias)
        if room_id is None:
            raise not_found("Room alias not found")
        servers = {ctx.server_name}
        for m in await ctx.roomserver.get_joined_members(room_id):
            if _domain(m):
                servers.add(_domain(m))
        ordered = [ctx.server_name] + sorted(servers - {ctx.server_name})
        return {"room_id": room_id, "servers": ordered}

    async def public_rooms(limit: int | None, since: str | None, term: str | None) -> dict[str, Any]:
        if ctx.roomserver is None:
            return {"chunk": [], "total_room_count_estimate": 0}
        chunk = []
        for room_id in await ctx.roomserver.list_public_rooms():
            entry = public_room_entry(room_id, await ctx.roomserver.get_current_state(room_id))
            if term:
                hay = " ".join(str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias")).lower()
                if term.lower() not in hay:
                    continue
            chunk.append(entry)
        chunk.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        try:
            start = int(since) if since else 0
        except ValueError:
            raise invalid_param("Invalid since token") from None
        if start < 0 or (limit is not None and limit < 0):
            raise invalid_param("since and limit must not be negative")
        end = len(chunk) if limit is None else start + limit
        out: dict[str, Any] = {"chunk": chunk[start:end], "total_room_count_estimate": len(chunk)}
        if end < len(chunk):
            out["next_batch"] = str(end)
        if start > 0:
            out["prev_batch"] = str(max(0, start - (limit or start)))
        return out

    # ---- device and E2E key queries (answered for our own users only) -------------
    def userapi() -> UserAPI:
        if ctx.userapi is None:
            raise not_found("Unknown user")
        return ctx.userapi

    def local_user(user_id: Any) -> bool:
        return isinstance(user_id, str) and user_id.startswith("@") and _domain(user_id) == ctx.server_name

    @router.get("/user/devices/{user_id}")
    async def user_devices(user_id: str, origin: str = Depends(auth)) -> dict[str, Any]:
        if not local_user(user_id):
            raise invalid_param("User is not local to this server")
        ua = userapi()
        devices = await ua.list_devices(user_id)
        keys = (await ua.query_keys({user_id: []})).get(user_id, {})
        out = []
        for d in sorted(devices, key=lambda d: d.device_id):
            entry: dict[str, Any] = {"device_id": d.device_id}
            k = keys.get(d.device_id)
            if isinstance(k, dict):
                entry["keys"] = {n: v for n, v in k.items() if n != "unsigned"}
            if d.display_name is not None:
                entry["device_display_name"] = d.display_name
            out.append(entry)
        # The stream_id of our last m.device_list_update for the user, so that the next one's
        # prev_id follows on; never announced yet: 0.
        chain = await ctx.store.get_device_list(user_id) if ctx.store is not None else None
        return {"user_id": user_id, "stream_id": chain[0] if chain is not None else 0, "devices": out}

    @router.post("/user/keys/query")
    async def user_keys_query(request: Request, origin: str = Depends(auth)) -> dict[str, Any]:
        body = request.state.federation_body
        wanted = body.get("device_keys") if isinstance(body, dict) else None
        if not isinstance(wanted, dict):
            raise bad_json("device_keys must be an object")
        if len(wanted) > MAX_KEY_QUERY_USERS:
            raise MatrixError(400, "M_TOO_LARGE", f"At most {MAX_KEY_QUERY_USERS} users per query")
        ask: dict[str, list[str]] = {}
        for user_id, device_ids in wanted.items():
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise bad_json("device_keys values must be lists of device IDs")
            if local_user(user_id):
                ask[user_id] = device_ids
        found = await userapi().query_keys(ask) if ask else {}
        return {"device_keys": {u: found.get(u, {}) for u in ask}}

    @router.post("/user/keys/claim")
    async def user_keys_claim(request: Request, origin: str = Depends(auth)) -> dict[str, Any]:
        body = request.state.federation_body
        wanted = body.get("one_time_keys") if isinstance(body, dict) else None
        if not isinstance(wanted, dict):
            raise bad_json("one_time_keys must be an object")
        ask: dict[str, dict[str, str]] = {}
        count = 0
        for user_id, devices in wanted.items():
            if not isinstance(devices, dict) or not all(isinstance(a, str) for a in devices.values()):
                raise bad_json("one_time_keys values must map device IDs to algorithms")
            count += len(devices)
            if local_user(user_id):
                ask[user_id] = dict(devices)
        if count > MAX_KEY_QUERY_DEVICES:
            raise MatrixError(400, "M_TOO_LARGE", f"At most {MAX_KEY_QUERY_DEVICES} devices per claim")
        return {"one_time_keys": await userapi().claim_keys(ask) if ask else {}}

    @router.get("/publicRooms")
    async def get_public_rooms(limit: int | None = None, since: str | None = None,
                               origin: str = Depends(auth)) -> dict[str, Any]:
        return await public_rooms(limit, since, None)

    @router.post("/publicRooms")
    async def post_public_rooms(request: Request, origin: str = Depends(auth)) -> dict[str, Any]:
        body = request.state.federation_body
        if not isinstance(body, dict):
            body = {}
        limit = _int_or_none(body.get("limit"), "limit")
        since = body.get("since")
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise bad_json("filter must be an object")
        term = flt.get("generic_search_term")
        return await public_rooms(limit, since if isinstance(since, str) else None,
                                  term if isinstance(term, str) else None)

    return router

