"""Client-Server API room routes served by the clientapi.

The clientapi owns nothing durable about rooms: it validates requests, turns them
into roomserver requests (through the input log, waiting for the commit) and
produces ephemeral records (typing, receipts, to-device) for the syncapi.
Timelines, /sync, /messages, /context and member lists are the syncapi's.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, limit_exceeded
from libs.http.body import read_json_body
from libs.events.client_format import to_client_event
from libs.events.room_versions import ROOM_VERSIONS
from libs.log.api import Producer
from libs.ratelimit import RateLimiter
from services.roomserver.api import CreateRoomRequest, NewEventRequest, RoomserverAPI
from services.userapi.api import Device, UserAPI

from services.syncapi.api import TOPIC_RECEIPTS, TOPIC_TO_DEVICE, TOPIC_TYPING

AuthDependency = Callable[..., Awaitable[Device]]

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")
_USER_ID_RE = re.compile(r"^@[^:\s]+:[^\s]+$")
_MAX_ID_BYTES = 255
MAX_EVENT_BODY = 65536  # a body larger than this cannot fit in an event anyway


@dataclass
class RoomRoutesDeps:
    server_name: str
    roomserver: RoomserverAPI
    userapi: UserAPI
    producer: Producer
    auth: AuthDependency  # FastAPI dependency returning the requesting Device
    # The same, but guests allowed (join/leave/send/state/typing/receipts); None: guests refused.
    guest_auth: AuthDependency | None = None
    # Read-your-writes: wait (bounded) until the syncapi has projected an event, so a
    # client's /sync or /messages right after its write sees it. None: don't wait.
    wait_projected: Callable[[str], Awaitable[Any]] | None = None
    ratelimiter: RateLimiter | None = None
    default_room_version: str = "11"
    topic_prefix: str = ""
    # Application services (services/appservice/api.py AppServiceRegistry): exclusive
    # alias namespaces; `alias_query(alias)` asks the owning AS about an unknown alias.
    appservices: Any = None
    alias_query: Callable[[str], Awaitable[bool]] | None = None
    # `user_query(user_id)` asks the AS owning an unknown local user ID about it.
    user_query: Callable[[str], Awaitable[bool]] | None = None
    # `network_rooms(instance_id)`: rooms an AS published in its own directory (None: all of them).
    network_rooms: Callable[[str | None], Awaitable[list[str]]] | None = None
    # services/federationapi/api.py FederationAPI (perform_join/leave/invite/knock,
    # query_room_alias) for rooms and users on other servers; None: local rooms only.
    federation: Any = None


def _err(status: int, errcode: str, msg: str, **extra: Any) -> MatrixError:
    return MatrixError(status, errcode, msg, **extra)


async def _json_body(request: Request) -> dict[str, Any]:
    # Bodies are optional on several of these endpoints (join, leave, ...).
    body: dict[str, Any] = await read_json_body(request, MAX_EVENT_BODY, allow_empty=True)
    return body


def _check_user_id(user_id: Any, field: str = "user_id") -> str:
    if not isinstance(user_id, str) or not _USER_ID_RE.match(user_id) or len(user_id.encode()) > _MAX_ID_BYTES:
        raise _err(400, "M_INVALID_PARAM", f"'{field}' is not a valid user ID")
    return user_id


def _check_room_id(room_id: str) -> str:
    if not room_id.startswith("!") or len(room_id.encode()) > _MAX_ID_BYTES:
        raise _err(400, "M_INVALID_PARAM", "Invalid room ID")
    return room_id


def _check_tombstone(room_id: str, event_type: str, content: dict[str, Any]) -> None:
    # A room cannot replace itself (clients following the tombstone would loop).
    if event_type == "m.room.tombstone" and content.get("replacement_room") == room_id:
        raise _err(400, "M_BAD_JSON", "A tombstone cannot point to its own room")


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is not None and not isinstance(v, str):
        raise _err(400, "M_BAD_JSON", f"'{key}' must be a string")
    return v


def build_room_router(deps: RoomRoutesDeps) -> APIRouter:
    router = APIRouter()
    rs = deps.roomserver
    auth = deps.auth
    guest = deps.guest_auth or deps.auth

    def limit(action: str, user_id: str) -> None:
        if deps.ratelimiter is not None:
            wait = deps.ratelimiter.check(action, user_id)
            if wait:
                raise limit_exceeded(wait)

    async def ensure_room(room_id: str) -> None:
        _check_room_id(room_id)
        if not await rs.room_exists(room_id):
            raise _err(404, "M_NOT_FOUND", "Unknown room")

    async def membership_of(room_id: str, user_id: str) -> str | None:
        m = await rs.get_membership(room_id, user_id)
        return m.membership if m else None

    async def require_joined(room_id: str, user_id: str) -> None:
        await ensure_room(room_id)
        if await membership_of(room_id, user_id) != "join":
            raise _err(403, "M_FORBIDDEN", f"User {user_id} not in room {room_id}")

    async def send(req: NewEventRequest) -> str:
        result = await rs.send_event(req)
        if deps.wait_projected is not None:
            await deps.wait_projected(result.event_id)
        return result.event_id

    async def profile_content(user_id: str) -> dict[str, Any]:
        prof = await deps.userapi.get_profile(user_id) or {}
        out: dict[str, Any] = {}
        if prof.get("displayname") is not None:
            out["displayname"] = prof["displayname"]
        if prof.get("avatar_url") is not None:
            out["avatar_url"] = prof["avatar_url"]
        return out

    async def lookup_alias(alias: str) -> str | None:
        room_id = await rs.resolve_alias(alias)
        if room_id is None and deps.alias_query is not None and await deps.alias_query(alias):
            room_id = await rs.resolve_alias(alias)  # the AS has just created it
        return room_id

    async def resolve_room(room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            room_id = await lookup_alias(room_id_or_alias)
            if room_id is None:
                raise _err(404, "M_NOT_FOUND", "Room alias not found")
            return room_id
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias
        raise _err(400, "M_INVALID_PARAM", "Not a room ID or alias")

    # ---------------------------------------------------------------- other servers
    def domain(identifier: str) -> str:
        return identifier.split(":", 1)[1] if ":" in identifier else ""

    def is_remote_alias(room_id_or_alias: str) -> bool:
        return (deps.federation is not None and room_id_or_alias.startswith("#")
                and domain(room_id_or_alias) not in ("", deps.server_name))

    async def resolve_room_and_servers(room_id_or_alias: str, request: Request) -> tuple[str, list[str]]:
        """Room ID and the servers to ask about it (?server_name= / ?via=, the alias's answer)."""
        vias = [v for v in request.query_params.getlist("server_name") + request.query_params.getlist("via") if v]
        if is_remote_alias(room_id_or_alias):
            room_id, servers = await deps.federation.query_room_alias(room_id_or_alias)
            return room_id, list(dict.fromkeys(vias + servers))
        return await resolve_room(room_id_or_alias), vias

    async def is_resident(room_id: str) -> bool:
        """Whether we take part in the room (one of our users is joined): then membership
        changes are ordinary local events. A room of our own is always ours to write."""
        if not await rs.room_exists(room_id):
            return False
        if domain(room_id) == deps.server_name:
            return True
        return any(domain(m) == deps.server_name for m in await rs.get_joined_members(room_id))

    async def remote_servers_for(room_id: str, user_id: str) -> list[str]:
        """Servers that may help with a room we are not in: whoever invited us or saw our knock."""
        m = await rs.get_membership(room_id, user_id)
        out: list[str] = []
        if m is not None:
            ev = await rs.get_event(m.event_id)
            if ev is not None and domain(str(ev.get("sender", ""))) not in ("", deps.server_name):
                out.append(domain(str(ev["sender"])))
        return out

    async def wait_for(event_id: str) -> None:
        if deps.wait_projected is not None:
            await deps.wait_projected(event_id)

    async def join_content(device: Device, body: dict[str, Any]) -> dict[str, Any]:
        extra = {k: v for k, v in body.items() if k not in ("third_party_signed", "membership")}
        content: dict[str, Any] = {**extra, "membership": "join", **await profile_content(device.user_id)}
        reason = _opt_str(body, "reason")
        if reason is not None:
            content["reason"] = reason
        return content

    async def do_join(room_id: str, device: Device, body: dict[str, Any],
                      servers: list[str] | None = None) -> dict[str, Any]:
        limit("join", device.user_id)
        _check_room_id(room_id)
        via: list[str] = []
        remote = False
        if deps.federation is not None and not await is_resident(room_id):
            # Through other servers: those given, whoever invited us (v12 room IDs name no server).
            via = list(servers or []) + await remote_servers_for(room_id, device.user_id)
            remote = bool(via) or domain(room_id) not in ("", deps.server_name) or not await rs.room_exists(room_id)
        if remote:
            if device.is_guest:
                raise _err(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot join remote rooms")
            event_id = await deps.federation.perform_join(room_id, device.user_id, via,
                                                          await join_content(device, body))
            await wait_for(event_id)
            return {"room_id": room_id}
        await ensure_room(room_id)
        if device.is_guest:
            ga = await rs.get_state_event(room_id, "m.room.guest_access", "")
            if ga is None or ga.get("content", {}).get("guest_access") != "can_join":
                raise _err(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
        # Extra body keys become member event content, as clients expect (profile and membership win).
        extra = {k: v for k, v in body.items() if k not in ("third_party_signed", "membership")}
        content: dict[str, Any] = {**extra, "membership": "join", **await profile_content(device.user_id)}
        reason = _opt_str(body, "reason")
        if reason is not None:
            content["reason"] = reason
        current = await rs.get_state_event(room_id, "m.room.member", device.user_id)
        if current is not None and current.get("content") == content:
            return {"room_id": room_id}  # already joined like this: no new event
        await send(NewEventRequest(room_id=room_id, type="m.room.member", sender=device.user_id,
                                   state_key=device.user_id, content=content))
        return {"room_id": room_id}

    # ---------------------------------------------------------------- create
    @router.post("/createRoom")
    async def create_room(request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
        body = await _json_body(request)
        version = body.get("room_version", deps.default_room_version)
        if not isinstance(version, str):
            raise _err(400, "M_BAD_JSON", "'room_version' must be a string")
        if version not in ROOM_VERSIONS:
            raise _err(400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {version!r} is not supported")
        preset = _opt_str(body, "preset")
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise _err(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
        if preset is not None and preset not in PRESETS:
            raise _err(400, "M_INVALID_PARAM", f"Unknown preset {preset!r}")
        invite = body.get("invite", [])
        if not isinstance(invite, list):
            raise _err(400, "M_BAD_JSON", "'invite' must be a list")
        invite = [_check_user_id(u, "invite") for u in invite]
        initial_state = body.get("initial_state", [])
        if not isinstance(initial_state, list) or not all(
            isinstance(s, dict) and isinstance(s.get("type"), str) and isinstance(s.get("content", {}), dict)
            and isinstance(s.get("state_key", ""), str)
            for s in initial_state
        ):
            raise _err(400, "M_BAD_JSON", "'initial_state' must be a list of state events")
        creation_content = body.get("creation_content", {})
        if not isinstance(creation_content, dict):
            raise _err(400, "M_BAD_JSON", "'creation_content' must be an object")
        plo = body.get("power_level_content_override")
        if plo is not None and not isinstance(plo, dict):
            raise _err(400, "M_BAD_JSON", "'power_level_content_override' must be an object")
        alias_name = _opt_str(body, "room_alias_name")
        if alias_name is not None:
            if ":" in alias_name or not alias_name or any(c.isspace() for c in alias_name):
                raise _err(400, "M_INVALID_PARAM", "Invalid characters in room alias")
            alias = f"#{alias_name}:{deps.server_name}"
            if len(alias.encode()) > _MAX_ID_BYTES:
                raise _err(400, "M_INVALID_PARAM", "Room alias too long")
            if await rs.resolve_alias(alias) is not None:
                raise _err(400, "M_ROOM_IN_USE", "Room alias already taken")
        is_direct = body.get("is_direct", False)
        if not isinstance(is_direct, bool):
            raise _err(400, "M_BAD_JSON", "'is_direct' must be a boolean")
        creator_profile = await profile_content(device.user_id)
        req = CreateRoomRequest(
            creator=device.user_id,
            room_version=version,
            preset=preset,
            visibility=visibility,
            name=_opt_str(body, "name"),
            topic=_opt_str(body, "topic"),
            room_alias_name=alias_name,
            invite=invite,
            is_direct=is_direct,
            initial_state=initial_state,
            creation_content=creation_content,
            power_level_content_override=plo,
            device_id=device.device_id,
            creator_displayname=creator_profile.get("displayname"),
            creator_avatar_url=creator_profile.get("avatar_url"),
        )
        room_id = await rs.create_room(req)
        if deps.wait_projected is not None:
            state = await rs.get_current_state(room_id)
            if state:
                last = max(state.values(), key=lambda ev: ev.get("depth", 0))
                await deps.wait_projected(last["event_id"])
        out: dict[str, Any] = {"room_id": room_id}
        if alias_name is not None:
            out["room_alias"] = f"#{alias_name}:{deps.server_name}"
        return out

    # ---------------------------------------------------------------- membership
    @router.post("/join/{room_id_or_alias}")
    async def join_any(room_id_or_alias: str, request: Request, device: Device = Depends(guest)) -> dict[str, Any]:
        body = await _json_body(request)
        room_id, servers = await resolve_room_and_servers(room_id_or_alias, request)
        return await do_join(room_id, device, body, servers)

    @router.post("/knock/{room_id_or_alias}")
    async def knock(room_id_or_alias: str, request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
        body = await _json_body(request)
        limit("join", device.user_id)
        room_id, servers = await resolve_room_and_servers(room_id_or_alias, request)
        _check_room_id(room_id)
        content: dict[str, Any] = {"membership": "knock", **await profile_content(device.user_id)}
        reason = _opt_str(body, "reason")
        if reason is not None:
            content["reason"] = reason
        current = await membership_of(room_id, device.user_id) if await rs.room_exists(room_id) else None
        if current in ("join", "ban", "invite"):
            raise _err(403, "M_FORBIDDEN", f"You cannot knock: your membership is {current}")
        if deps.federation is not None and not await is_resident(room_id):
            event_id = await deps.federation.perform_knock(room_id, device.user_id, servers, content)
            await wait_for(event_id)
            return {"room_id": room_id}
        await ensure_room(room_id)
        await send(NewEventRequest(room_id=room_id, type="m.room.member", sender=device.user_id,
                                   state_key=device.user_id, content=content))
        return {"room_id": room_id}

    @router.post("/rooms/{room_id}/join")
    async def join_room(room_id: str, request: Request, device: Device = Depends(guest)) -> dict[str, Any]:
        body = await _json_body(request)
        return await do_join(room_id, device, body)

    async def membership_change(room_id: str, device: Device, target: str, membership: str,
                                body: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        await ensure_room(room_id)
        content: dict[str, Any] = {"membership": membership}
        reason = _opt_str(body, "reason")
        if reason is not None:
            content["reason"] = reason
        if extra:
            content.update(extra)
        await send(NewEventRequest(room_id=room_id, type="m.room.member", sender=device.user_id,
                                   state_key=target, content=content))
        return {}

    @router.post("/rooms/{room_id}/invite")
    async def invite(room_id: str, request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
        body = await _json_body(request)
        if "user_id" not in body:
            raise _err(400, "M_MISSING_PARAM", "Missing 'user_id'")
        target = _check_user_id(body["user_id"])
        limit("invite", device.user_id)
        if deps.user_query is not None and target.endswith(":" + deps.server_name) \
                and await deps.userapi.get_account(target) is None:
            await deps.user_query(target)  # an AS may create its user now
        extra = await profile_content(target) if target.endswith(":" + deps.server_name) else {}
        if deps.federation is not None and domain(target) != deps.server_name:
            # A remote invitee's server signs the invite before it enters the room.
            await ensure_room(room_id)
            if await membership_of(room_id, device.user_id) != "join":
                raise _err(403, "M_FORBIDDEN", f"User {device.user_id} not in room {room_id}")
            if await membership_of(room_id, target) in ("join", "ban"):
                raise _err(403, "M_FORBIDDEN", f"{target} cannot be invited: already joined or banned")
            content: dict[str, Any] = {"membership": "invite"}
            reason = _opt_str(body, "reason")
            if reason is not None:
                content["reason"] = reason
            event_id = await deps.federation.perform_invite(room_id, device.user_id, target, content)
            await wait_for(event_id)
            return {}
        return await membership_change(room_id, device, target, "invite", body, extra)

    @router.post("/rooms/{room_id}/leave")
    async def leave(room_id: str, request: Request, device: Device = Depends(guest)) -> dict[str, Any]:
        body = await _json_body(request)
        _check_room_id(room_id)
        if deps.federation is not None and await rs.room_exists(room_id) and not await is_resident(room_id) \
                and await membership_of(room_id, device.user_id) in ("invite", "knock"):
            # Rejecting a remote invite / withdrawing a knock: the room's servers must hear it.
            content: dict[str, Any] = {"membership": "leave"}
            reason = _opt_str(body, "reason")
            if reason is not None:
                content["reason"] = reason
            servers = await remote_servers_for(room_id, device.user_id)
            event_id = await deps.federation.perform_leave(room_id, device.user_id, servers, content)
            await wait_for(event_id)
            return {}
        await ensure_room(room_id)
        if await membership_of(room_id, device.user_id) in (None, "leave"):
            raise _err(403, "M_FORBIDDEN", "You are not in this room")
        return await membership_change(room_id, device, device.user_id, "leave", body)

    @router.post("/rooms/{room_id}/forget")
    async def forget(room_id: str, device: Device = Depends(auth)) -> dict[str, Any]:
        await ensure_room(room_id)
        if await membership_of(room_id, device.user_id) in ("join", "invite", "knock"):
            raise _err(400, "M_UNKNOWN", "User must leave the room before forgetting it")
        return {}

    for action, membership in (("kick", "leave"), ("ban", "ban"), ("unban", "leave")):
        def make(action: str = action, membership: str = membership):  # bind loop variables
            async def handler(room_id: str, request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
                body = await _json_body(request)
                if "user_id" not in body:
                    raise _err(400, "M_MISSING_PARAM", "Missing 'user_id'")
                target = _check_user_id(body["user_id"])
                await ensure_room(room_id)
                current = await membership_of(room_id, target)
                if action == "kick" and current in (None, "leave", "ban"):
                    raise _err(403, "M_FORBIDDEN", "The target user is not in the room")
                if action == "unban" and current != "ban":
                    raise _err(403, "M_FORBIDDEN", "The target user is not banned")
                return await membership_change(room_id, device, target, membership, body)
            return handler
        router.add_api_route(f"/rooms/{{room_id}}/{action}", make(), methods=["POST"])

    @router.get("/joined_rooms")
    async def joined_rooms(device: Device = Depends(guest)) -> dict[str, Any]:
        rooms = await rs.get_rooms_for_user(device.user_id, ("join",))
        return {"joined_rooms": [m.room_id for m in rooms]}

    # ---------------------------------------------------------------- events
    @router.post("/rooms/{room_id}/send/{event_type}")
    async def send_message_no_txn(room_id: str, event_type: str, request: Request,
                                  device: Device = Depends(guest)) -> dict[str, Any]:
        # The older POST form (still used by SyTest): no client txn ID, so no dedup.
        return await send_message(room_id, event_type, f"post-{uuid.uuid4().hex}", request, device)

    @router.put("/rooms/{room_id}/send/{event_type}/{txn_id}")
    async def send_message(room_id: str, event_type: str, txn_id: str, request: Request,
                           device: Device = Depends(guest)) -> dict[str, Any]:
        body = await _json_body(request)
        limit("message", device.user_id)
        await ensure_room(room_id)
        _check_tombstone(room_id, event_type, body)
        event_id = await send(NewEventRequest(room_id=room_id, type=event_type, sender=device.user_id,
                                              content=body, device_id=device.device_id, txn_id=txn_id))
        return {"event_id": event_id}

    async def put_state(room_id: str, event_type: str, state_key: str, request: Request, device: Device) -> dict[str, Any]:
        body = await _json_body(request)
        await ensure_room(room_id)
        _check_tombstone(room_id, event_type, body)
        if len(state_key.encode()) > _MAX_ID_BYTES or len(event_type.encode()) > _MAX_ID_BYTES:
            raise _err(400, "M_INVALID_PARAM", "type or state_key too long")
        if event_type == "m.room.member":
            # Allowed (e.g. a per-room display name); the auth rules judge the membership.
            _check_user_id(state_key, "state_key")
            if not isinstance(body.get("membership"), str):
                raise _err(400, "M_BAD_JSON", "'membership' must be a string")
        # Sending identical state again is a no-op that returns the existing event (as Synapse does).
        existing = await rs.get_state_event(room_id, event_type, state_key)
        if existing is not None and existing.get("content") == body and existing.get("sender") == device.user_id:
            return {"event_id": existing["event_id"]}
        event_id = await send(NewEventRequest(room_id=room_id, type=event_type, sender=device.user_id,
                                              state_key=state_key, content=body))
        if event_type == "m.room.guest_access" and state_key == "" and body.get("guest_access") != "can_join":
            await _remove_guests(room_id)
        return {"event_id": event_id}

    async def _remove_guests(room_id: str) -> None:
        """Guest access revoked: joined guests leave (as in Synapse), best effort."""
        for user_id in await rs.get_joined_members(room_id):
            if not user_id.endswith(":" + deps.server_name):
                continue
            account = await deps.userapi.get_account(user_id)
            if account is None or not account.is_guest:
                continue
            try:
                await send(NewEventRequest(room_id=room_id, type="m.room.member", sender=user_id,
                                           state_key=user_id, content={"membership": "leave"}))
            except MatrixError:
                pass

    @router.put("/rooms/{room_id}/state/{event_type}/{state_key:path}")
    async def put_state_key(room_id: str, event_type: str, state_key: str, request: Request,
                            device: Device = Depends(auth)) -> dict[str, Any]:
        return await put_state(room_id, event_type, state_key, request, device)

    @router.put("/rooms/{room_id}/state/{event_type}")
    async def put_state_nokey(room_id: str, event_type: str, request: Request,
                              device: Device = Depends(auth)) -> dict[str, Any]:
        return await put_state(room_id, event_type, "", request, device)

    async def visible_state(room_id: str, user_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Current state for members; state at the leave for former members."""
        await ensure_room(room_id)
        m = await rs.get_membership(room_id, user_id)
        if m is not None and m.membership == "join":
            return await rs.get_current_state(room_id)
        if m is not None and m.membership in ("leave", "ban"):
            return await rs.get_state_at_event(m.event_id)
        hv = await rs.get_state_event(room_id, "m.room.history_visibility", "")
        if hv is not None and hv.get("content", {}).get("history_visibility") == "world_readable":
            return await rs.get_current_state(room_id)
        raise _err(403, "M_FORBIDDEN", f"User {user_id} not in room {room_id}")

    @router.get("/rooms/{room_id}/state")
    async def get_state_all(room_id: str, device: Device = Depends(guest)) -> list[dict[str, Any]]:
        state = await visible_state(room_id, device.user_id)
        now = int(time.time() * 1000)
        return [to_client_event(ev, now_ms=now) for ev in state.values()]

    async def get_state_one(room_id: str, event_type: str, state_key: str, device: Device,
                            fmt: str | None) -> dict[str, Any]:
        state = await visible_state(room_id, device.user_id)
        ev = state.get((event_type, state_key))
        if ev is None:
            raise _err(404, "M_NOT_FOUND", "Event not found")
        if fmt == "event":
            return to_client_event(ev, now_ms=int(time.time() * 1000))
        return ev.get("content", {})

    @router.get("/rooms/{room_id}/state/{event_type}/{state_key:path}")
    async def get_state_key(room_id: str, event_type: str, state_key: str, format: str | None = None,
                            device: Device = Depends(guest)) -> dict[str, Any]:
        return await get_state_one(room_id, event_type, state_key, device, format)

    @router.get("/rooms/{room_id}/state/{event_type}")
    async def get_state_nokey(room_id: str, event_type: str, format: str | None = None,
                              device: Device = Depends(guest)) -> dict[str, Any]:
        return await get_state_one(room_id, event_type, "", device, format)

    @router.put("/rooms/{room_id}/redact/{event_id}/{txn_id}")
    async def redact(room_id: str, event_id: str, txn_id: str, request: Request,
                     device: Device = Depends(auth)) -> dict[str, Any]:
        body = await _json_body(request)
        await ensure_room(room_id)
        target = await rs.get_event(event_id)
        if target is not None and target.get("room_id") != room_id:
            raise _err(400, "M_INVALID_PARAM", "Event is in another room")
        content: dict[str, Any] = {}
        reason = _opt_str(body, "reason")
        if reason is not None:
            content["reason"] = reason
        version = await rs.get_room_version(room_id)
        if version is not None and ROOM_VERSIONS[version].updated_redaction_rules:
            content["redacts"] = event_id
        new_id = await send(NewEventRequest(room_id=room_id, type="m.room.redaction", sender=device.user_id,
                                            content=content, redacts=event_id,
                                            device_id=device.device_id, txn_id=txn_id))
        return {"event_id": new_id}

    # GET /rooms/{roomId}/event/{eventId} is the syncapi's (history visibility, redactions).

    # ---------------------------------------------------------------- ephemeral
    def topic(name: str) -> str:
        return deps.topic_prefix + name

    @router.put("/rooms/{room_id}/typing/{user_id}")
    async def typing(room_id: str, user_id: str, request: Request, device: Device = Depends(guest)) -> dict[str, Any]:
        body = await _json_body(request)
        if user_id != device.user_id:
            raise _err(403, "M_FORBIDDEN", "Cannot set another user's typing state")
        is_typing = body.get("typing")
        if not isinstance(is_typing, bool):
            raise _err(400, "M_BAD_JSON", "'typing' must be a boolean")
        timeout = body.get("timeout", 30000)
        if is_typing and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
            raise _err(400, "M_BAD_JSON", "'timeout' must be a non-negative integer")
        await require_joined(room_id, device.user_id)
        record = {"room_id": room_id, "user_id": user_id, "typing": is_typing,
                  "timeout_ms": min(int(timeout), 120_000) if is_typing else 0}
        await deps.producer.send(topic(TOPIC_TYPING), room_id, json.dumps(record).encode())
        return {}

    async def send_receipt(room_id: str, receipt_type: str, event_id: str, device: Device,
                           thread_id: str | None) -> None:
        record = {"room_id": room_id, "user_id": device.user_id, "receipt_type": receipt_type,
                  "event_id": event_id, "ts": int(time.time() * 1000)}
        if thread_id is not None:
            record["thread_id"] = thread_id
        await deps.producer.send(topic(TOPIC_RECEIPTS), room_id, json.dumps(record).encode())

    async def set_fully_read(room_id: str, event_id: str, device: Device) -> None:
        await deps.userapi.set_fully_read(device.user_id, room_id, event_id)

    @router.post("/rooms/{room_id}/receipt/{receipt_type}/{event_id}")
    async def receipt(room_id: str, receipt_type: str, event_id: str, request: Request,
                      device: Device = Depends(guest)) -> dict[str, Any]:
        body = await _json_body(request)
        if receipt_type not in ("m.read", "m.read.private", "m.fully_read"):
            raise _err(400, "M_INVALID_PARAM", f"Unknown receipt type {receipt_type!r}")
        thread_id = _opt_str(body, "thread_id")
        await require_joined(room_id, device.user_id)
        if receipt_type == "m.fully_read":
            await set_fully_read(room_id, event_id, device)
        else:
            await send_receipt(room_id, receipt_type, event_id, device, thread_id)
        return {}

    @router.post("/rooms/{room_id}/read_markers")
    async def read_markers(room_id: str, request: Request, device: Device = Depends(guest)) -> dict[str, Any]:
        body = await _json_body(request)
        await require_joined(room_id, device.user_id)
        for key in ("m.fully_read", "m.read", "m.read.private"):
            eid = _opt_str(body, key)
            if eid is None:
                continue
            if key == "m.fully_read":
                await set_fully_read(room_id, eid, device)
            else:
                await send_receipt(room_id, key, eid, device, None)
        return {}

    @router.put("/sendToDevice/{event_type}/{txn_id}")
    async def send_to_device(event_type: str, txn_id: str, request: Request,
                             device: Device = Depends(auth)) -> dict[str, Any]:
        body = await _json_body(request)
        messages = body.get("messages")
        if not isinstance(messages, dict):
            raise _err(400, "M_BAD_JSON", "'messages' must be an object")
        for user_id, by_device in messages.items():
            _check_user_id(user_id, "messages")
            if not isinstance(by_device, dict):
                raise _err(400, "M_BAD_JSON", "messages must map user IDs to device maps")
            for device_id, content in by_device.items():
                if not isinstance(content, dict):
                    raise _err(400, "M_BAD_JSON", "to-device content must be an object")
                record = {"sender": device.user_id, "sender_device": device.device_id, "type": event_type,
                          "user_id": user_id, "device_id": device_id, "content": content,
                          "message_id": f"{device.user_id}|{device.device_id}|{txn_id}|{user_id}|{device_id}"}
                await deps.producer.send(topic(TOPIC_TO_DEVICE), user_id, json.dumps(record).encode())
        return {}

    # ---------------------------------------------------------------- directory
    def check_alias(alias: str) -> None:
        if not alias.startswith("#") or ":" not in alias or len(alias.encode()) > _MAX_ID_BYTES:
            raise _err(400, "M_INVALID_PARAM", "Invalid room alias")

    @router.get("/directory/room/{alias}")
    async def get_alias(alias: str) -> dict[str, Any]:
        check_alias(alias)
        if is_remote_alias(alias):  # the alias's server answers (/query/directory)
            remote_room, servers = await deps.federation.query_room_alias(alias)
            return {"room_id": remote_room, "servers": servers}
        room_id = await lookup_alias(alias)
        if room_id is None:
            raise _err(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        return {"room_id": room_id, "servers": [deps.server_name]}

    @router.put("/directory/room/{alias}")
    async def put_alias(alias: str, request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
        body = await _json_body(request)
        check_alias(alias)
        if alias.split(":", 1)[1] != deps.server_name:
            raise _err(400, "M_INVALID_PARAM", "Alias must be on this server")
        room_id = body.get("room_id")
        if not isinstance(room_id, str):
            raise _err(400, "M_BAD_JSON", "'room_id' must be a string")
        owner = deps.appservices.exclusive_alias_owner(alias) if deps.appservices is not None else None
        if owner is not None and not owner.is_interested_in_user(device.user_id):
            raise _err(400, "M_EXCLUSIVE", "This alias is reserved by an application service")
        await ensure_room(room_id)
        if not await rs.set_alias(alias, room_id, device.user_id):
            raise _err(409, "M_UNKNOWN", f"Room alias {alias} already exists")
        return {}

    @router.delete("/directory/room/{alias}")
    async def delete_alias(alias: str, device: Device = Depends(auth)) -> dict[str, Any]:
        check_alias(alias)
        room_id = await rs.resolve_alias(alias)
        if room_id is None:
            raise _err(404, "M_NOT_FOUND", "Room alias not found")
        if await membership_of(room_id, device.user_id) != "join":
            raise _err(403, "M_FORBIDDEN", "You may not delete this alias")
        await rs.remove_alias(alias)
        # The alias leaves the room's m.room.canonical_alias too (as Synapse), best effort:
        # the deleter may lack the power to send it.
        ev = await rs.get_state_event(room_id, "m.room.canonical_alias", "")
        content = dict(ev.get("content") or {}) if ev else {}
        alts = content.get("alt_aliases")
        if content.get("alias") == alias or (isinstance(alts, list) and alias in alts):
            if content.get("alias") == alias:
                del content["alias"]
            if isinstance(alts, list) and alias in alts:
                content["alt_aliases"] = [a for a in alts if a != alias]
            try:
                await send(NewEventRequest(room_id=room_id, type="m.room.canonical_alias",
                                           sender=device.user_id, state_key="", content=content))
            except MatrixError:
                pass
        return {}

    @router.get("/rooms/{room_id}/aliases")
    async def room_aliases(room_id: str, device: Device = Depends(auth)) -> dict[str, Any]:
        await visible_state(room_id, device.user_id)
        return {"aliases": await rs.get_aliases(room_id)}

    @router.get("/directory/list/room/{room_id}")
    async def get_visibility(room_id: str) -> dict[str, Any]:
        await ensure_room(room_id)
        return {"visibility": await rs.get_room_visibility(room_id)}

    @router.put("/directory/list/room/{room_id}")
    async def put_visibility(room_id: str, request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
        body = await _json_body(request)
        vis = body.get("visibility", "public")
        if vis not in ("public", "private"):
            raise _err(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
        await require_joined(room_id, device.user_id)
        await rs.set_room_visibility(room_id, vis)
        return {}

    async def public_rooms(limit: int | None, since: str | None, search: str | None,
                           room_ids: list[str] | None = None) -> dict[str, Any]:
        room_ids = await rs.list_public_rooms() if room_ids is None else room_ids
        chunk = []
        for room_id in room_ids:
            state = await rs.get_current_state(room_id)
            entry = _public_room_entry(room_id, state)
            if search:
                s = search.lower()
                hay = " ".join(str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias")).lower()
                if s not in hay:
                    continue
            chunk.append(entry)
        chunk.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        start = 0
        if since:
            try:
                start = int(since)
            except ValueError:
                raise _err(400, "M_INVALID_PARAM", "Invalid 'since' token") from None
        end = len(chunk) if limit is None else start + max(0, limit)
        out: dict[str, Any] = {"chunk": chunk[start:end], "total_room_count_estimate": len(chunk)}
        if end < len(chunk):
            out["next_batch"] = str(end)
        if start > 0:
            out["prev_batch"] = str(max(0, start - (limit or 0)))
        return out

    def remote_directory(server: str | None) -> str | None:
        """The server of a ?server= naming another server whose list we can ask for."""
        if not server or server == deps.server_name or deps.federation is None \
                or not hasattr(deps.federation, "query_public_rooms"):
            return None
        return server

    @router.get("/publicRooms")
    async def get_public_rooms(limit: int | None = None, since: str | None = None, server: str | None = None) -> dict[str, Any]:
        remote = remote_directory(server)
        if remote is not None:  # that server's list (GET /publicRooms over federation)
            params: dict[str, Any] = {k: v for k, v in (("limit", limit), ("since", since)) if v is not None}
            return await deps.federation.query_public_rooms(remote, params, None)
        return await public_rooms(limit, since, None)

    @router.post("/publicRooms")
    async def post_public_rooms(request: Request, device: Device = Depends(auth),
                                server: str | None = None) -> dict[str, Any]:
        body = await _json_body(request)
        remote = remote_directory(server)
        if remote is not None:
            fwd = {k: body[k] for k in ("limit", "since", "filter", "include_all_networks",
                                         "third_party_instance_id") if k in body}
            return await deps.federation.query_public_rooms(remote, None, fwd)
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise _err(400, "M_BAD_JSON", "'limit' must be an integer")
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise _err(400, "M_BAD_JSON", "'filter' must be an object")
        term = flt.get("generic_search_term")
        # Application services keep their own lists (per third-party network instance).
        instance = body.get("third_party_instance_id")
        room_ids: list[str] | None = None
        if deps.network_rooms is not None:
            if isinstance(instance, str):
                room_ids = await deps.network_rooms(instance)
            elif body.get("include_all_networks") is True:
                room_ids = list(dict.fromkeys([*await rs.list_public_rooms(), *await deps.network_rooms(None)]))
        return await public_rooms(limit, _opt_str(body, "since"), term if isinstance(term, str) else None,
                                  room_ids)

    return router


def _public_room_entry(room_id: str, state: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    def content(t: str) -> dict[str, Any]:
        ev = state.get((t, ""))
        return ev.get("content", {}) if ev else {}

    joined = sum(1 for (t, _), ev in state.items() if t == "m.room.member" and ev.get("content", {}).get("membership") == "join")
    entry: dict[str, Any] = {
        "room_id": room_id,
        "num_joined_members": joined,
        "world_readable": content("m.room.history_visibility").get("history_visibility") == "world_readable",
        "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
        "join_rule": content("m.room.join_rules").get("join_rule", "invite"),
    }
    for key, t, field in (("name", "m.room.name", "name"), ("topic", "m.room.topic", "topic"),
                          ("canonical_alias", "m.room.canonical_alias", "alias"),
                          ("avatar_url", "m.room.avatar", "url")):
        v = content(t).get(field)
        if isinstance(v, str) and v:
            entry[key] = v
    create = content("m.room.create")
    if isinstance(create.get("type"), str):
        entry["room_type"] = create["type"]
    return entry
