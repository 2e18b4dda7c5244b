"""Room creation: which events a POST /createRoom produces (pure, no I/O).

Follows the spec's presets and Synapse's order and defaults:
create, creator's join, power levels, canonical alias, join rules, history
visibility, guest access (private presets), `initial_state`, name, topic, then an
invite per invitee.
"""
from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

from libs.errors import MatrixError, bad_json
from libs.events.room_versions import RoomVersion

from services.roomserver.api import CreateRoomRequest

PRESETS: dict[str, dict[str, Any]] = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_can_join": True,
                     "invitees_have_ops": False},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared",
                             "guest_can_join": True, "invitees_have_ops": True},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_can_join": False,
                    "invitees_have_ops": False},
}


@dataclass(slots=True)
class PlannedEvent:
    type: str
    state_key: str | None
    content: dict[str, Any]
    sender: str


def random_room_id(server_name: str) -> str:
    alphabet = string.ascii_letters
    return "!" + "".join(secrets.choice(alphabet) for _ in range(18)) + ":" + server_name


def preset_for(req: CreateRoomRequest) -> str:
    if req.preset is None:
        return "public_chat" if req.visibility == "public" else "private_chat"
    if req.preset not in PRESETS:
        raise MatrixError(400, "M_INVALID_PARAM", f"unknown preset {req.preset!r}")
    return req.preset


def _is_user_id(v: Any) -> bool:
    return isinstance(v, str) and len(v) >= 4 and v.startswith("@") and ":" in v[2:]


def create_content(req: CreateRoomRequest, version: RoomVersion) -> dict[str, Any]:
    """The m.room.create content for this request."""
    if not isinstance(req.creation_content, dict):
        raise bad_json("creation_content must be an object")
    content = dict(req.creation_content)
    content["room_version"] = version.identifier
    if not version.implicit_room_creator:
        content["creator"] = req.creator
    else:
        content.pop("creator", None)
    if "m.federate" in content and not isinstance(content["m.federate"], bool):
        raise bad_json("m.federate must be a boolean")
    if version.hydra:
        extra = content.get("additional_creators", [])
        if not isinstance(extra, list) or not all(_is_user_id(u) for u in extra):
            raise bad_json("additional_creators must be a list of user IDs")
        # Trusted private chats make the invitees creators (they outrank power levels).
        if preset_for(req) == "trusted_private_chat" and req.invite:
            extra = list(dict.fromkeys([*extra, *req.invite]))
        if extra:
            content["additional_creators"] = extra
        elif "additional_creators" in content:
            del content["additional_creators"]
    return content


def default_power_levels(req: CreateRoomRequest, version: RoomVersion) -> dict[str, Any]:
    users: dict[str, int] = {} if version.hydra else {req.creator: 100}
    if PRESETS[preset_for(req)]["invitees_have_ops"] and not version.hydra:
        for invitee in req.invite:
            users[invitee] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            # v12 creators outrank 100-level admins; Synapse keeps upgrades to them.
            "m.room.tombstone": 150 if version.hydra else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50,
        "historical": 100,
    }


def plan_after_create(
    req: CreateRoomRequest, version: RoomVersion, alias: str | None
) -> list[PlannedEvent]:
    """Every event after m.room.create, in order."""
    creator = req.creator
    preset = PRESETS[preset_for(req)]
    initial: dict[tuple[str, str], dict[str, Any]] = {}
    for item in req.initial_state:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise bad_json("initial_state entries need a string type")
        sk = item.get("state_key", "")
        content = item.get("content")
        if not isinstance(sk, str) or not isinstance(content, dict):
            raise bad_json("initial_state entries need a string state_key and an object content")
        if item["type"] == "m.room.create" or (item["type"] == "m.room.member"):
            raise bad_json(f"initial_state may not contain {item['type']}")
        initial[(item["type"], sk)] = content

    out: list[PlannedEvent] = []
    join_content: dict[str, Any] = {"membership": "join"}
    if req.creator_displayname:
        join_content["displayname"] = req.creator_displayname
    if req.creator_avatar_url:
        join_content["avatar_url"] = req.creator_avatar_url
    out.append(PlannedEvent("m.room.member", creator, join_content, creator))

    pl = initial.pop(("m.room.power_levels", ""), None)
    if pl is None:
        pl = default_power_levels(req, version)
        if req.power_level_content_override:
            if not isinstance(req.power_level_content_override, dict):
                raise bad_json("power_level_content_override must be an object")
            pl.update(req.power_level_content_override)
    out.append(PlannedEvent("m.room.power_levels", "", pl, creator))

    if alias is not None and ("m.room.canonical_alias", "") not in initial:
        out.append(PlannedEvent("m.room.canonical_alias", "", {"alias": alias}, creator))
    if ("m.room.join_rules", "") not in initial:
        out.append(PlannedEvent("m.room.join_rules", "", {"join_rule": preset["join_rule"]}, creator))
    if ("m.room.history_visibility", "") not in initial:
        out.append(PlannedEvent(
            "m.room.history_visibility", "", {"history_visibility": preset["history_visibility"]}, creator
        ))
    if preset["guest_can_join"] and ("m.room.guest_access", "") not in initial:
        out.append(PlannedEvent("m.room.guest_access", "", {"guest_access": "can_join"}, creator))
    for (etype, sk), content in initial.items():
        out.append(PlannedEvent(etype, sk, content, creator))
    if req.name is not None:
        if not isinstance(req.name, str):
            raise bad_json("name must be a string")
        out.append(PlannedEvent("m.room.name", "", {"name": req.name}, creator))
    if req.topic is not None:
        if not isinstance(req.topic, str):
            raise bad_json("topic must be a string")
        out.append(PlannedEvent("m.room.topic", "", {"topic": req.topic}, creator))
    for invitee in req.invite:
        if not _is_user_id(invitee):
            raise bad_json(f"invalid user ID to invite: {invitee!r}")
        content = {"membership": "invite"}
        if req.is_direct:
            content["is_direct"] = True
        out.append(PlannedEvent("m.room.member", invitee, content, creator))
    return out
