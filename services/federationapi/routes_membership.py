"""Inbound membership handshakes (Server-Server API): make_join/send_join, make_leave/
send_leave, invite, make_knock/send_knock.

Every request is X-Matrix authenticated (`FederationAuth`). The PDUs sent to us are
checked here for what does not need the room's state — format, the event ID in the path,
the sender's server is the requesting server, signatures and content hash — and then
handed to the roomserver (`make_membership_event`, `receive_membership_pdu`,
`store_invite`), which auth-checks them on the room's state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Depends, Query, Request

from libs.errors import MatrixError, bad_json, forbidden, incompatible_room_version, not_found
from libs.events.room_versions import ROOM_VERSIONS, EventFormat, RoomVersion, get_room_version
from libs.events.signing import SigningKey, sign_event
from services.roomserver.api import RoomserverAPI
from services.userapi.api import UserAPI

from .auth import FederationAuth
from .keyring import KeyRing
from .perform import PDUCheckError, check_signed_pdu, domain_of, federation_form, stripped_state

FED_V1 = "/_matrix/federation/v1"
FED_V2 = "/_matrix/federation/v2"
MAX_INVITE_ROOM_STATE = 50


@dataclass
class MembershipRoutesContext:
    server_name: str
    auth: FederationAuth
    keyring: KeyRing
    roomserver: RoomserverAPI
    signing_key: SigningKey
    userapi: UserAPI | None = None


def _body_pdu(request: Request) -> dict[str, Any]:
    body = request.state.federation_body
    if body is None:
        raise bad_json("Missing request body")
    if not isinstance(body, dict):
        raise bad_json("The body must be a JSON object")
    return body


def _check_remote_user(user_id: str, origin: str) -> None:
    if not user_id.startswith("@") or domain_of(user_id) != origin:
        raise forbidden("The user is not of the requesting server")


async def _checked_membership_pdu(ctx: MembershipRoutesContext, origin: str, room_id: str, event_id: str,
                                  pdu: dict[str, Any], rv: RoomVersion, membership: str) -> dict[str, Any]:
    """The PDU of a send_join/send_leave/send_knock or invite, checked apart from auth."""
    pdu = federation_form(pdu, rv) if "event_id" in pdu and rv.event_format is not EventFormat.V1 else pdu
    content = pdu.get("content")
    if (membership == "join" and rv.restricted_join_rule and isinstance(content, dict)
            and domain_of(content.get("join_authorised_via_users_server")) == ctx.server_name):
        # A restricted join authorised by one of our users: the event needs our signature
        # too (the roomserver's auth rules check that user may invite). The origin's
        # signature is still checked below.
        pdu = sign_event(dict(pdu), rv, ctx.server_name, ctx.signing_key)
    try:
        eid, pdu = await check_signed_pdu(ctx.keyring, pdu, rv)
    except PDUCheckError as e:
        if e.errcode == "M_FORBIDDEN":
            raise forbidden(e.error) from None
        raise bad_json(e.error) from None
    if eid != event_id:
        raise bad_json("The event ID in the path is not the event's")
    if pdu.get("room_id") != room_id:
        raise bad_json("The event's room is not the room in the path")
    if pdu.get("type") != "m.room.member" or not isinstance(pdu.get("state_key"), str):
        raise bad_json("Not a membership event")
    content = pdu.get("content")
    if not isinstance(content, dict) or content.get("membership") != membership:
        raise bad_json(f"Not a {membership} event")
    if "origin" in pdu and pdu["origin"] != origin:
        raise forbidden("The event's origin is not the requesting server")
    if membership == "invite":
        if domain_of(pdu.get("sender")) != origin:
            raise forbidden("The inviter is not of the requesting server")
        if domain_of(pdu["state_key"]) != ctx.server_name:
            raise forbidden("The invitee is not a user of this server")
    else:
        if pdu.get("sender") != pdu["state_key"]:
            raise bad_json("The sender must be the user whose membership changes")
        if domain_of(pdu.get("sender")) != origin:
            raise forbidden("The sender is not of the requesting server")
    return pdu


def build_membership_router(ctx: MembershipRoutesContext) -> APIRouter:
    router = APIRouter()
    auth: Callable[[Request], Awaitable[str]] = ctx.auth
    rs = ctx.roomserver

    async def room_version(room_id: str) -> RoomVersion:
        version = await rs.get_room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        return get_room_version(version)

    async def make(room_id: str, user_id: str, origin: str, membership: str,
                   ver: list[str] | None) -> dict[str, Any]:
        _check_remote_user(user_id, origin)
        version, template = await rs.make_membership_event(room_id, user_id, membership, ver)
        return {"room_version": version, "event": template}

    @router.get(FED_V1 + "/make_join/{room_id}/{user_id}")
    async def make_join(room_id: str, user_id: str, ver: list[str] = Query(default=[]),
                        origin: str = Depends(auth)) -> dict[str, Any]:
        # Without `ver` the requesting server supports only room version 1 (spec).
        return await make(room_id, user_id, origin, "join", ver or ["1"])

    @router.get(FED_V1 + "/make_leave/{room_id}/{user_id}")
    async def make_leave(room_id: str, user_id: str, origin: str = Depends(auth)) -> dict[str, Any]:
        return await make(room_id, user_id, origin, "leave", None)

    @router.get(FED_V1 + "/make_knock/{room_id}/{user_id}")
    async def make_knock(room_id: str, user_id: str, ver: list[str] = Query(default=[]),
                         origin: str = Depends(auth)) -> dict[str, Any]:
        if not ver:
            raise MatrixError(400, "M_MISSING_PARAM", "ver is required")
        return await make(room_id, user_id, origin, "knock", ver)

    async def receive(room_id: str, event_id: str, request: Request, origin: str, membership: str) -> Any:
        rv = await room_version(room_id)
        pdu = await _checked_membership_pdu(ctx, origin, room_id, event_id, _body_pdu(request), rv, membership)
        return rv, pdu, await rs.receive_membership_pdu(origin, room_id, pdu, membership)

    async def join(room_id: str, event_id: str, request: Request, origin: str) -> dict[str, Any]:
        rv, pdu, result = await receive(room_id, event_id, request, origin, "join")
        servers = sorted({d for d in (domain_of(ev.get("state_key")) for ev in result.state
                                      if ev.get("type") == "m.room.member"
                                      and (ev.get("content") or {}).get("membership") == "join") if d}
                         | {ctx.server_name})
        # omit_members is a hint: we always send the whole state (members_omitted: false).
        return {"origin": ctx.server_name, "state": result.state, "auth_chain": result.auth_chain,
                "event": pdu, "members_omitted": False, "servers_in_room": servers}

    @router.put(FED_V2 + "/send_join/{room_id}/{event_id}")
    async def send_join(room_id: str, event_id: str, request: Request, omit_members: bool = False,
                        origin: str = Depends(auth)) -> dict[str, Any]:
        return await join(room_id, event_id, request, origin)

    # The deprecated v1 forms answer [200, body] (older servers still call them).
    @router.put(FED_V1 + "/send_join/{room_id}/{event_id}")
    async def send_join_v1(room_id: str, event_id: str, request: Request,
                           origin: str = Depends(auth)) -> list[Any]:
        answer = await join(room_id, event_id, request, origin)
        return [200, {k: answer[k] for k in ("origin", "state", "auth_chain")}]

    @router.put(FED_V2 + "/send_leave/{room_id}/{event_id}")
    async def send_leave(room_id: str, event_id: str, request: Request,
                         origin: str = Depends(auth)) -> dict[str, Any]:
        await receive(room_id, event_id, request, origin, "leave")
        return {}

    @router.put(FED_V1 + "/send_leave/{room_id}/{event_id}")
    async def send_leave_v1(room_id: str, event_id: str, request: Request,
                            origin: str = Depends(auth)) -> list[Any]:
        await receive(room_id, event_id, request, origin, "leave")
        return [200, {}]

    @router.put(FED_V1 + "/send_knock/{room_id}/{event_id}")
    async def send_knock(room_id: str, event_id: str, request: Request,
                         origin: str = Depends(auth)) -> dict[str, Any]:
        await receive(room_id, event_id, request, origin, "knock")
        state = await rs.get_current_state(room_id)
        return {"knock_room_state": stripped_state(state.values())}

    async def accept_invite(room_id: str, event_id: str, origin: str, version: str, event: Any,
                            stripped: Any) -> dict[str, Any]:
        if version not in ROOM_VERSIONS:
            raise incompatible_room_version(version)
        rv = get_room_version(version)
        if not isinstance(event, dict):
            raise bad_json("event is required")
        if not isinstance(stripped, list):
            raise bad_json("invite_room_state must be a list")
        pdu = await _checked_membership_pdu(ctx, origin, room_id, event_id, event, rv, "invite")
        invitee = pdu["state_key"]
        known = await rs.get_room_version(room_id)
        if known is not None and known != version:
            raise incompatible_room_version(version, "The room's version is not the one given")
        sign_event(pdu, rv, ctx.server_name, ctx.signing_key)
        if ctx.userapi is not None and await ctx.userapi.get_account(invitee) is None:
            # No such user: signed all the same (the spec's /invite has no 404, and Synapse
            # answers so), but nothing is stored for a user who does not exist.
            return {"event": pdu}
        await rs.store_invite(version, pdu, [s for s in stripped if isinstance(s, dict)][:MAX_INVITE_ROOM_STATE])
        return {"event": pdu}

    @router.put(FED_V2 + "/invite/{room_id}/{event_id}")
    async def invite(room_id: str, event_id: str, request: Request, origin: str = Depends(auth)) -> dict[str, Any]:
        body = _body_pdu(request)
        version = body.get("room_version")
        if not isinstance(version, str):
            raise bad_json("room_version is required")
        return await accept_invite(room_id, event_id, origin, version, body.get("event"),
                                   body.get("invite_room_state", []))

    @router.put(FED_V1 + "/invite/{room_id}/{event_id}")
    async def invite_v1(room_id: str, event_id: str, request: Request, origin: str = Depends(auth)) -> list[Any]:
        # Deprecated v1: the body is the event, its stripped state in unsigned, and no room
        # version is named: the room's if we know it, else "1" (what v1 servers speak).
        event = _body_pdu(request)
        version = await rs.get_room_version(room_id) or "1"
        unsigned = event.get("unsigned")
        stripped = unsigned.get("invite_room_state", []) if isinstance(unsigned, dict) else []
        answer = await accept_invite(room_id, event_id, origin, version, event, stripped)
        return [200, answer]

    return router
