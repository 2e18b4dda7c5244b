"""Room creation plans: presets, power levels, initial_state, invites."""
from __future__ import annotations

import pytest

from libs.errors import MatrixError
from libs.events.room_versions import get_room_version

from services.roomserver.api import CreateRoomRequest
from services.roomserver.create import create_content, plan_after_create

A, B, C = "@alice:hs", "@bob:hs", "@carol:hs"


def _plan(**kw):
    req = CreateRoomRequest(creator=A, room_version=kw.pop("room_version", "11"), **kw)
    return [(p.type, p.state_key) for p in plan_after_create(req, get_room_version(req.room_version), kw.get("alias"))], \
        plan_after_create(req, get_room_version(req.room_version), None)


@pytest.mark.parametrize(
    "preset, join_rule, guest",
    [("private_chat", "invite", True), ("trusted_private_chat", "invite", True), ("public_chat", "public", False)],
)
def test_presets_exact_events(preset: str, join_rule: str, guest: bool) -> None:
    keys, plan = _plan(preset=preset, name="N", topic="T", invite=[B])
    expected = [("m.room.member", A), ("m.room.power_levels", ""), ("m.room.join_rules", ""),
                ("m.room.history_visibility", "")]
    if guest:
        expected.append(("m.room.guest_access", ""))
    expected += [("m.room.name", ""), ("m.room.topic", ""), ("m.room.member", B)]
    assert keys == expected
    by = {(p.type, p.state_key): p.content for p in plan}
    assert by[("m.room.join_rules", "")] == {"join_rule": join_rule}
    assert by[("m.room.history_visibility", "")] == {"history_visibility": "shared"}
    pl = by[("m.room.power_levels", "")]
    assert pl["users"][A] == 100
    assert (pl["users"].get(B) == 100) == (preset == "trusted_private_chat")
    assert pl["events"] == {
        "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
        "m.room.server_acl": 100, "m.room.encryption": 100,
    }
    assert pl["users_default"] == 0 and pl["state_default"] == 50 and pl["events_default"] == 0


def test_default_preset_follows_visibility() -> None:
    keys, _ = _plan(visibility="public")
    assert ("m.room.guest_access", "") not in keys
    keys, _ = _plan()
    assert ("m.room.guest_access", "") in keys


def test_initial_state_overrides_and_pl_override() -> None:
    req = CreateRoomRequest(
        creator=A, room_version="10", preset="public_chat",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "invite"}},
                       {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        power_level_content_override={"events_default": 10, "users": {A: 100, C: 50}},
    )
    plan = plan_after_create(req, get_room_version("10"), "#x:hs")
    keys = [(p.type, p.state_key) for p in plan]
    assert keys == [("m.room.member", A), ("m.room.power_levels", ""), ("m.room.canonical_alias", ""),
                    ("m.room.history_visibility", ""), ("m.room.join_rules", ""), ("m.room.encryption", "")]
    pl = plan[1].content
    assert pl["events_default"] == 10 and pl["users"] == {A: 100, C: 50}
    assert plan[4].content == {"join_rule": "invite"}


def test_is_direct_invites() -> None:
    plan = plan_after_create(CreateRoomRequest(creator=A, room_version="11", invite=[B], is_direct=True),
                             get_room_version("11"), None)
    assert plan[-1].content == {"membership": "invite", "is_direct": True}


def test_create_content_per_version() -> None:
    req = CreateRoomRequest(creator=A, room_version="10", creation_content={"m.federate": False})
    assert create_content(req, get_room_version("10")) == {"creator": A, "room_version": "10", "m.federate": False}
    req = CreateRoomRequest(creator=A, room_version="11", creation_content={"creator": "@evil:hs"})
    assert create_content(req, get_room_version("11")) == {"room_version": "11"}
    req = CreateRoomRequest(creator=A, room_version="12", preset="trusted_private_chat", invite=[B],
                            creation_content={"additional_creators": [C]})
    assert create_content(req, get_room_version("12")) == {"room_version": "12", "additional_creators": [C, B]}
    v12 = plan_after_create(req, get_room_version("12"), None)
    pl = v12[1].content
    assert pl["users"] == {} and pl["events"]["m.room.tombstone"] == 150


@pytest.mark.parametrize("bad", [
    {"initial_state": [{"type": 5, "content": {}}]},
    {"initial_state": [{"type": "m.room.member", "state_key": B, "content": {"membership": "join"}}]},
    {"invite": ["not-a-user"]},
])
def test_bad_requests_are_matrix_errors(bad: dict) -> None:
    with pytest.raises(MatrixError) as ei:
        plan_after_create(CreateRoomRequest(creator=A, room_version="11", **bad), get_room_version("11"), None)
    assert ei.value.status == 400 and ei.value.errcode == "M_BAD_JSON"


def test_bad_additional_creators() -> None:
    with pytest.raises(MatrixError):
        create_content(CreateRoomRequest(creator=A, room_version="12",
                                         creation_content={"additional_creators": ["x"]}), get_room_version("12"))
