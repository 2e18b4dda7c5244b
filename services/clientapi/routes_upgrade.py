"""POST /rooms/{roomId}/upgrade: replace a room by a new one of another room version.

Order (so that clients following the tombstone always find the new room's state,
and the tombstone is the first thing the old room shows after the upgrade):
1. checks: room known, requester joined and allowed to send `m.room.tombstone`,
   target version supported;
2. (room IDs chosen by us) the tombstone goes into the old room first, naming the
   pre-chosen new room ID, so the new create event can point at it
   (`predecessor.event_id`); for v12+ targets (room ID = create event hash) the new
   room is created first and its predecessor has no event ID;
3. the new room: copied create content (`m.federate`, `type`, ...), the important
   state, power levels (the upgrader temporarily raised so it can send the copied
   state, then the old levels restored), bans, the directory visibility;
4. the old room: power levels restricted (events_default/invite above users_default),
   canonical alias moved, local aliases re-pointed, taken out of the directory;
5. per local member: room push rules, `m.direct` entries and tags copied.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError
from libs.events.room_versions import ROOM_VERSIONS
from services.roomserver.api import CreateRoomRequest, NewEventRequest
from services.roomserver.create import random_room_id
from services.userapi.api import Device

from .routes_rooms import RoomRoutesDeps, _check_room_id, _json_body

log = logging.getLogger(__name__)

# State copied verbatim to the new room (as the spec recommends).
COPIED_STATE = (
    "m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar", "m.room.topic",
    "m.room.guest_access", "m.room.history_visibility", "m.room.join_rules",
    "m.room.related_groups", "m.room.power_levels",
)
# Create-content keys that are the server's, never copied.
_CREATE_OWN_KEYS = ("room_version", "creator", "predecessor")


def _int(v: Any, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def user_level(pl: dict[str, Any], user_id: str) -> int:
    users = pl.get("users") if isinstance(pl.get("users"), dict) else {}
    return _int(users.get(user_id), _int(pl.get("users_default"), 0))


def state_level(pl: dict[str, Any], event_type: str) -> int:
    events = pl.get("events") if isinstance(pl.get("events"), dict) else {}
    return _int(events.get(event_type), _int(pl.get("state_default"), 50))


def needed_level(pl: dict[str, Any]) -> int:
    """The level that can send every state event the copied power levels name."""
    events = pl.get("events") if isinstance(pl.get("events"), dict) else {}
    levels = [_int(pl.get("state_default"), 50), _int(pl.get("events_default"), 0), 100]
    levels += [_int(v, 0) for v in events.values()]
    return max(levels)


def restricted_levels(pl: dict[str, Any]) -> dict[str, Any] | None:
    """The old room's power levels after an upgrade: only moderators may talk or
    invite (at least 50, and above users_default); None when already that strict."""
    restricted = max(50, _int(pl.get("users_default"), 0) + 1)
    out = dict(pl)
    changed = False
    for key in ("events_default", "invite"):
        default = 0 if key == "events_default" else 50
        if _int(pl.get(key), default) < restricted:
            out[key] = restricted
            changed = True
    return out if changed else None


def build_upgrade_router(deps: RoomRoutesDeps) -> APIRouter:
    router = APIRouter()
    rs = deps.roomserver

    async def send(req: NewEventRequest) -> str:
        result = await rs.send_event(req)
        if deps.wait_projected is not None:
            await deps.wait_projected(result.event_id)
        return result.event_id

    async def try_send(req: NewEventRequest) -> str | None:
        # Best-effort parts of the upgrade (the old room's PLs, alias moves): the new
        # room exists already, so a refusal here must not fail the request.
        try:
            return await send(req)
        except MatrixError as e:
            log.info("upgrade: %s in %s not sent: %s", req.type, req.room_id, e.error)
            return None

    @router.post("/rooms/{room_id}/upgrade")
    async def upgrade(room_id: str, request: Request, device: Device = Depends(deps.auth)) -> dict[str, Any]:
        body = await _json_body(request)
        new_version = body.get("new_version")
        if not isinstance(new_version, str):
            raise MatrixError(400, "M_BAD_JSON", "'new_version' must be a string")
        _check_room_id(room_id)
        if not await rs.room_exists(room_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        if new_version not in ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {new_version!r} is not supported")
        user_id = device.user_id
        membership = await rs.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            raise MatrixError(403, "M_FORBIDDEN", f"User {user_id} not in room {room_id}")
        state = await rs.get_current_state(room_id)
        old_create = state.get(("m.room.create", ""), {}).get("content", {})
        old_pl = state.get(("m.room.power_levels", ""), {}).get("content")
        old_version = old_create.get("room_version", "1") if isinstance(old_create, dict) else "1"
        old_rv = ROOM_VERSIONS.get(str(old_version))
        is_creator = _is_creator(state, user_id, bool(old_rv and old_rv.hydra))
        if isinstance(old_pl, dict) and not is_creator:
            if user_level(old_pl, user_id) < state_level(old_pl, "m.room.tombstone"):
                raise MatrixError(403, "M_FORBIDDEN", "You cannot upgrade this room")
        elif not isinstance(old_pl, dict) and not is_creator:
            raise MatrixError(403, "M_FORBIDDEN", "You cannot upgrade this room")

        new_rv = ROOM_VERSIONS[new_version]
        creation_content = {k: v for k, v in (old_create or {}).items() if k not in _CREATE_OWN_KEYS}
        if not new_rv.hydra:
            creation_content.pop("additional_creators", None)
        tombstone_content = {"body": "This room has been replaced"}
        new_room_id: str | None = None
        tombstone_id: str | None = None
        if not new_rv.hydra:
            new_room_id = random_room_id(deps.server_name)
            tombstone_id = await send(NewEventRequest(
                room_id=room_id, type="m.room.tombstone", sender=user_id, state_key="",
                content={**tombstone_content, "replacement_room": new_room_id}))
            creation_content["predecessor"] = {"room_id": room_id, "event_id": tombstone_id}
        else:
            creation_content["predecessor"] = {"room_id": room_id}

        # Copied state; the power levels let the upgrader send all of it, the real ones follow.
        initial_state: list[dict[str, Any]] = []
        for etype in COPIED_STATE:
            ev = state.get((etype, ""))
            if ev is None or etype == "m.room.power_levels":
                continue
            initial_state.append({"type": etype, "state_key": "", "content": ev.get("content", {})})
        for etype, default in (("m.room.join_rules", {"join_rule": "invite"}),
                               ("m.room.history_visibility", {"history_visibility": "shared"})):
            if (etype, "") not in state:
                initial_state.append({"type": etype, "state_key": "", "content": default})
        final_pl: dict[str, Any] | None = None
        if isinstance(old_pl, dict):
            final_pl = dict(old_pl)
            users = dict(final_pl.get("users") or {})
            if new_rv.hydra:
                # v12 creators outrank every level and must not be listed.
                users.pop(user_id, None)
                final_pl["users"] = users
                start_pl = final_pl
            else:
                start_pl = dict(final_pl)
                if user_level(old_pl, user_id) < needed_level(old_pl):
                    start_pl["users"] = {**users, user_id: needed_level(old_pl)}
            initial_state.append({"type": "m.room.power_levels", "state_key": "", "content": start_pl})
            if start_pl == final_pl:
                final_pl = None
        # The private preset only adds what the old room lacks (guest_access can_join, as Synapse).
        visibility = await rs.get_room_visibility(room_id)
        prof = await deps.userapi.get_profile(user_id) or {}
        created = await rs.create_room(CreateRoomRequest(
            creator=user_id, room_version=new_version, preset="private_chat", visibility=visibility,
            initial_state=initial_state, creation_content=creation_content, device_id=device.device_id,
            creator_displayname=prof.get("displayname"), creator_avatar_url=prof.get("avatar_url"),
            room_id=new_room_id,
        ))
        new_room_id = created
        if tombstone_id is None:
            await send(NewEventRequest(
                room_id=room_id, type="m.room.tombstone", sender=user_id, state_key="",
                content={**tombstone_content, "replacement_room": new_room_id}))

        # Bans carry over (other memberships do not: people join the new room themselves).
        for (etype, skey), ev in state.items():
            if etype == "m.room.member" and ev.get("content", {}).get("membership") == "ban":
                ban = {"membership": "ban"}
                reason = ev.get("content", {}).get("reason")
                if isinstance(reason, str):
                    ban["reason"] = reason
                await try_send(NewEventRequest(room_id=new_room_id, type="m.room.member", sender=user_id,
                                               state_key=skey, content=ban))
        if final_pl is not None:
            await try_send(NewEventRequest(room_id=new_room_id, type="m.room.power_levels", sender=user_id,
                                           state_key="", content=final_pl))

        # The old room: moderators only, aliases and directory entry move to the new room.
        if isinstance(old_pl, dict):
            restricted = restricted_levels(old_pl)
            if restricted is not None and (is_creator or user_level(old_pl, user_id)
                                           >= state_level(old_pl, "m.room.power_levels")):
                await try_send(NewEventRequest(room_id=room_id, type="m.room.power_levels", sender=user_id,
                                               state_key="", content=restricted))
        canonical = state.get(("m.room.canonical_alias", ""))
        for alias in await rs.get_aliases(room_id):
            if await rs.remove_alias(alias):
                await rs.set_alias(alias, new_room_id, user_id)
        if canonical is not None and canonical.get("content"):
            if await try_send(NewEventRequest(room_id=room_id, type="m.room.canonical_alias", sender=user_id,
                                              state_key="", content={})) is not None:
                await try_send(NewEventRequest(room_id=new_room_id, type="m.room.canonical_alias",
                                               sender=user_id, state_key="", content=canonical["content"]))
        if visibility == "public":
            await rs.set_room_visibility(room_id, "private")
        await copy_user_data(room_id, new_room_id)
        return {"replacement_room": new_room_id}

    async def copy_user_data(old_room: str, new_room: str) -> None:
        """Room push rules, m.direct and tags of the old room's local members."""
        suffix = ":" + deps.server_name
        for member in await rs.get_joined_members(old_room):
            if not member.endswith(suffix):
                continue
            try:
                rule = await deps.userapi.get_push_rule(member, "room", old_room)
                if rule is not None:
                    await deps.userapi.put_push_rule(member, "room", new_room, {"actions": rule.get("actions", [])})
                direct = await deps.userapi.get_account_data(member, "", "m.direct")
                if isinstance(direct, dict):
                    changed = False
                    for rooms in direct.values():
                        if isinstance(rooms, list) and old_room in rooms and new_room not in rooms:
                            rooms.append(new_room)
                            changed = True
                    if changed:
                        await deps.userapi.set_account_data(member, "", "m.direct", direct)
                tags = await deps.userapi.get_account_data(member, old_room, "m.tag")
                if isinstance(tags, dict) and tags.get("tags"):
                    await deps.userapi.set_account_data(member, new_room, "m.tag", tags)
            except MatrixError as e:  # one member's data must not fail the upgrade
                log.info("upgrade: copying %s's data failed: %s", member, e.error)

    return router


def _is_creator(state: dict[tuple[str, str], dict[str, Any]], user_id: str, hydra: bool) -> bool:
    """v12+: the room's creators outrank power levels."""
    if not hydra:
        return False
    create = state.get(("m.room.create", ""), {})
    extra = create.get("content", {}).get("additional_creators", [])
    return create.get("sender") == user_id or (isinstance(extra, list) and user_id in extra)
