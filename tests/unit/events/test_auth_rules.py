"""Table-driven authorization-rule cases for every room version.

Each scenario builds a small room with the `Room` builder and returns the event under
test and whether the spec allows it in that room version. Scenarios are crossed with
every room version they apply to."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import signedjson.key
import signedjson.sign

from libs.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    check_event_auth,
    get_named_level,
    get_power_level_for_event_type,
    get_user_power_level,
    is_power_event,
    is_valid_user_id,
)
from libs.events.event import Event
from libs.events.room_versions import ROOM_VERSIONS
from libs.events.unpadded_base64 import encode_base64

from .test_auth_builder import ALICE, ALL_VERSIONS, BOB, CAROL, DAVE, Room

Scenario = Callable[[str], tuple[Room, Event, bool]]
SCENARIOS: list[tuple[str, Callable[[int], bool], Scenario]] = []


def scenario(applies: Callable[[int], bool] = lambda n: True) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS.append((fn.__name__, applies, fn))
        return fn
    return register


def _cases() -> list[Any]:
    out = []
    for name, applies, fn in SCENARIOS:
        for v in ALL_VERSIONS:
            if applies(int(v)):
                out.append(pytest.param(fn, v, id=f"{name}-v{v}"))
    return out


def _public_room(v: str, *members: str) -> Room:
    room = Room(v)
    room.power_levels({"users": {} if room.rv.hydra else {ALICE: 100}})
    room.join_rules("public")
    for m in members:
        room.member(m, "join")
    return room


# ---------------------------------------------------------------- create


@scenario()
def create_ok(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    return room, room.create, True


@scenario()
def create_with_prev_events(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    content = dict(room.create.content)
    ev = room.event(room.pdu("m.room.create", ALICE, content, state_key="", prev=[room.create], auth=[]))
    return room, ev, False


@scenario(lambda n: n < 12)
def create_room_id_domain_mismatch(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    content = dict(room.create.content)
    ev = room.event(room.pdu("m.room.create", ALICE, content, state_key="", prev=[], auth=[],
                             extra={"room_id": "!other:b.org"}))
    return room, ev, False


@scenario(lambda n: n == 12)
def create_with_room_id_v12(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    ev = room.event(room.pdu("m.room.create", ALICE, dict(room.create.content), state_key="", prev=[],
                             auth=[], extra={"room_id": "!x"}))
    return room, ev, False


@scenario()
def create_unknown_room_version(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    content = {**room.create.content, "room_version": "99"}
    ev = room.event(room.pdu("m.room.create", ALICE, content, state_key="", prev=[], auth=[]))
    return room, ev, False


@scenario()
def create_without_creator(v: str) -> tuple[Room, Event, bool]:
    # `creator` is required until v11 made the sender the creator.
    room = Room(v)
    content = {k: x for k, x in room.create.content.items() if k != "creator"}
    ev = room.event(room.pdu("m.room.create", ALICE, content, state_key="", prev=[], auth=[]))
    return room, ev, int(v) >= 11


@scenario(lambda n: n == 12)
def create_additional_creators_invalid(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    content = {**room.create.content, "additional_creators": [BOB, "not-a-user"]}
    ev = room.event(room.pdu("m.room.create", ALICE, content, state_key="", prev=[], auth=[]))
    return room, ev, False


@scenario(lambda n: n == 12)
def create_additional_creators_valid(v: str) -> tuple[Room, Event, bool]:
    room = Room(v, create_content={"additional_creators": [BOB, CAROL]})
    return room, room.create, True


# ---------------------------------------------------------------- auth events (state-independent)


@scenario()
def auth_events_duplicate_type(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    old_pl = room.state[("m.room.power_levels", "")]
    room.power_levels({"users": {} if room.rv.hydra else {ALICE: 100}, "ban": 40})
    auth = room.select_auth("m.room.message", ALICE, None, {}) + [old_pl]
    ev = room.send("m.room.message", ALICE, {"body": "x"}, auth=auth)
    return room, ev, False


@scenario()
def auth_events_unexpected_type(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    auth = room.select_auth("m.room.message", ALICE, None, {}) + [room.state[("m.room.join_rules", "")]]
    ev = room.send("m.room.message", ALICE, {"body": "x"}, auth=auth)
    return room, ev, False


@scenario(lambda n: n < 12)
def auth_events_without_create(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    auth = [e for e in room.select_auth("m.room.message", ALICE, None, {}) if e.type != "m.room.create"]
    ev = room.send("m.room.message", ALICE, {"body": "x"}, auth=auth)
    return room, ev, False


@scenario(lambda n: n == 12)
def auth_events_listing_create_v12(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    auth = room.select_auth("m.room.message", ALICE, None, {}) + [room.create]
    ev = room.send("m.room.message", ALICE, {"body": "x"}, auth=auth)
    return room, ev, False


@scenario()
def auth_event_from_other_room(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    other = Room(v, creator=ALICE)
    other.room_id = room.room_id + "x"
    foreign = other.member(ALICE, "join")
    room.events[foreign.event_id] = foreign
    auth = [e for e in room.select_auth("m.room.message", ALICE, None, {}) if e.type != "m.room.member"]
    ev = room.send("m.room.message", ALICE, {"body": "x"}, auth=[*auth, foreign])
    return room, ev, False


@scenario()
def message_ok(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.send("m.room.message", BOB, {"body": "hi"}), True


@scenario()
def federate_false_other_server(v: str) -> tuple[Room, Event, bool]:
    room = Room(v, create_content={"m.federate": False})
    room.join_rules("public")
    return room, room.member(BOB, "join"), False


@scenario()
def federate_false_same_server(v: str) -> tuple[Room, Event, bool]:
    room = Room(v, create_content={"m.federate": False})
    room.join_rules("public")
    return room, room.member(DAVE, "join"), True


# ---------------------------------------------------------------- joins


@scenario()
def creator_first_join(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    return room, room.state[("m.room.member", ALICE)], True


@scenario()
def non_creator_first_join(v: str) -> tuple[Room, Event, bool]:
    room = Room(v, join_creator=False)
    return room, room.member(BOB, "join"), False


@scenario()
def join_public(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.member(BOB, "join"), True


@scenario()
def join_without_join_rules_is_invite_only(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    return room, room.member(BOB, "join"), False


@scenario()
def join_for_someone_else(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.member(BOB, "join", sender=ALICE), False


@scenario()
def join_while_banned(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    room.member(BOB, "ban", sender=ALICE)
    return room, room.member(BOB, "join"), False


@scenario()
def join_invite_only_uninvited(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("invite")
    return room, room.member(BOB, "join"), False


@scenario()
def join_invite_only_invited(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("invite")
    room.member(BOB, "invite", sender=ALICE)
    return room, room.member(BOB, "join"), True


@scenario()
def join_knock_rule_invited(v: str) -> tuple[Room, Event, bool]:
    # "knock" is only a join rule from v7; before, it is an unknown rule (reject).
    room = Room(v)
    room.join_rules("knock")
    room.member(BOB, "invite", sender=ALICE)
    return room, room.member(BOB, "join"), int(v) >= 7


@scenario()
def join_unknown_rule(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("private")
    room.member(BOB, "invite", sender=ALICE)
    return room, room.member(BOB, "join"), False


@scenario()
def rejoin_when_joined(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("invite")
    return room, room.member(ALICE, "join", displayname="A"), True


def _restricted_room(v: str, rule: str = "restricted") -> Room:
    room = Room(v)
    room.join_rules(rule, allow=[{"type": "m.room_membership", "room_id": "!space:a.org"}])
    return room


def _signed_by(ev: Event, *servers: str) -> Event:
    for s in servers:
        ev.pdu["signatures"][s] = {"ed25519:k": "c2ln"}
    return ev


@scenario()
def restricted_join_authorised(v: str) -> tuple[Room, Event, bool]:
    room = _restricted_room(v)
    ev = room.member(BOB, "join", join_authorised_via_users_server=ALICE)
    _signed_by(ev, "a.org")
    return room, ev, int(v) >= 8


@scenario(lambda n: n >= 8)
def restricted_join_not_signed_by_authoriser(v: str) -> tuple[Room, Event, bool]:
    room = _restricted_room(v)
    return room, room.member(BOB, "join", join_authorised_via_users_server=ALICE), False


@scenario(lambda n: n >= 8)
def restricted_join_without_authoriser(v: str) -> tuple[Room, Event, bool]:
    room = _restricted_room(v)
    return room, room.member(BOB, "join"), False


@scenario(lambda n: n >= 8)
def restricted_join_authoriser_not_joined(v: str) -> tuple[Room, Event, bool]:
    room = _restricted_room(v)
    ev = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    return room, _signed_by(ev, "c.org"), False


@scenario(lambda n: n >= 8)
def restricted_join_authoriser_cannot_invite(v: str) -> tuple[Room, Event, bool]:
    room = _restricted_room(v)
    room.member(CAROL, "invite", sender=ALICE)
    room.member(CAROL, "join")
    room.power_levels({"users": {} if room.rv.hydra else {ALICE: 100}, "invite": 50})
    ev = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    return room, _signed_by(ev, "c.org"), False


@scenario(lambda n: n >= 8)
def restricted_join_already_invited(v: str) -> tuple[Room, Event, bool]:
    room = _restricted_room(v)
    room.member(BOB, "invite", sender=ALICE)
    return room, room.member(BOB, "join"), True


@scenario(lambda n: n >= 7)
def knock_restricted_join_authorised(v: str) -> tuple[Room, Event, bool]:
    room = _restricted_room(v, "knock_restricted")
    ev = room.member(BOB, "join", join_authorised_via_users_server=ALICE)
    return room, _signed_by(ev, "a.org"), int(v) >= 10


# ---------------------------------------------------------------- invites


@scenario()
def invite_ok(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    return room, room.member(BOB, "invite", sender=ALICE), True


@scenario()
def invite_by_non_member(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    return room, room.member(CAROL, "invite", sender=BOB), False


@scenario()
def invite_joined_user(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.member(BOB, "invite", sender=ALICE), False


@scenario()
def invite_banned_user(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    room.member(BOB, "ban", sender=ALICE)
    return room, room.member(BOB, "invite", sender=ALICE), False


@scenario()
def invite_below_invite_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.power_levels({"users": {} if room.rv.hydra else {ALICE: 100}, "invite": 10})
    return room, room.member(CAROL, "invite", sender=BOB), False


@scenario()
def invite_by_user_with_exact_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    users = {BOB: 10} if room.rv.hydra else {ALICE: 100, BOB: 10}
    room.power_levels({"users": users, "invite": 10})
    return room, room.member(CAROL, "invite", sender=BOB), True


_TPI_KEY = signedjson.key.generate_signing_key("1")
_OTHER_KEY = signedjson.key.generate_signing_key("2")


def _tpi_room(v: str, *, key: Any = _TPI_KEY, in_list: bool = False) -> Room:
    room = Room(v)
    pub = encode_base64(key.verify_key.encode())
    content: dict[str, Any] = {"display_name": "b...", "key_validity_url": "https://id/check"}
    if in_list:
        content["public_key"] = encode_base64(_OTHER_KEY.verify_key.encode())
        content["public_keys"] = [{"public_key": pub}]
    else:
        content["public_key"] = pub
    room.send("m.room.third_party_invite", ALICE, content, state_key="tok")
    return room


def _tpi_content(mxid: str = BOB, token: str = "tok", key: Any = _TPI_KEY) -> dict[str, Any]:
    signed = signedjson.sign.sign_json({"mxid": mxid, "token": token, "sender": ALICE}, "id.org", key)
    return {"membership": "invite", "third_party_invite": {"display_name": "b...", "signed": signed}}


@scenario()
def tpi_invite_ok(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    return room, room.send("m.room.member", ALICE, _tpi_content(), state_key=BOB), True


@scenario()
def tpi_invite_key_in_public_keys(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v, in_list=True)
    return room, room.send("m.room.member", ALICE, _tpi_content(), state_key=BOB), True


@scenario()
def tpi_invite_bad_signature(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    content = _tpi_content(key=_OTHER_KEY)
    return room, room.send("m.room.member", ALICE, content, state_key=BOB), False


@scenario()
def tpi_invite_tampered(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    content = _tpi_content()
    content["third_party_invite"]["signed"]["sender"] = CAROL
    return room, room.send("m.room.member", ALICE, content, state_key=BOB), False


@scenario()
def tpi_invite_mxid_mismatch(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    return room, room.send("m.room.member", ALICE, _tpi_content(mxid=CAROL), state_key=BOB), False


@scenario()
def tpi_invite_unknown_token(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    return room, room.send("m.room.member", ALICE, _tpi_content(token="nope"), state_key=BOB), False


@scenario()
def tpi_invite_other_sender(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    room.join_rules("public")
    room.member(DAVE, "join")
    return room, room.send("m.room.member", DAVE, _tpi_content(), state_key=BOB), False


@scenario()
def tpi_invite_target_banned(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    room.member(BOB, "ban", sender=ALICE)
    return room, room.send("m.room.member", ALICE, _tpi_content(), state_key=BOB), False


@scenario()
def tpi_invite_without_signed(v: str) -> tuple[Room, Event, bool]:
    room = _tpi_room(v)
    content = {"membership": "invite", "third_party_invite": {"display_name": "x"}}
    return room, room.send("m.room.member", ALICE, content, state_key=BOB), False


@scenario()
def third_party_invite_event_needs_invite_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.power_levels({"users": {} if room.rv.hydra else {ALICE: 100}, "invite": 5})
    ev = room.send("m.room.third_party_invite", BOB, {"public_key": "AAAA"}, state_key="t2")
    return room, ev, False


# ---------------------------------------------------------------- leave / kick / ban / unban


@scenario()
def leave_self_joined(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.member(BOB, "leave"), True


@scenario()
def leave_self_invited(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.member(BOB, "invite", sender=ALICE)
    return room, room.member(BOB, "leave"), True


@scenario()
def leave_self_not_in_room(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    return room, room.member(BOB, "leave"), False


@scenario()
def leave_self_banned(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.member(BOB, "ban", sender=ALICE)
    return room, room.member(BOB, "leave"), False


@scenario()
def kick_by_admin(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.member(BOB, "leave", sender=ALICE), True


@scenario()
def kick_by_equal_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB, CAROL)
    users = {BOB: 50, CAROL: 50} if room.rv.hydra else {ALICE: 100, BOB: 50, CAROL: 50}
    room.power_levels({"users": users})
    return room, room.member(CAROL, "leave", sender=BOB), False


@scenario()
def kick_below_kick_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB, CAROL)
    users = {BOB: 40} if room.rv.hydra else {ALICE: 100, BOB: 40}
    room.power_levels({"users": users})
    return room, room.member(CAROL, "leave", sender=BOB), False


@scenario()
def kick_by_non_member(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.member(ALICE, "leave")
    return room, room.member(BOB, "leave", sender=ALICE), False


@scenario()
def unban_needs_ban_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB, CAROL)
    room.member(CAROL, "ban", sender=ALICE)
    users = {BOB: 60} if room.rv.hydra else {ALICE: 100, BOB: 60}
    room.power_levels({"users": users, "kick": 50, "ban": 70})
    return room, room.member(CAROL, "leave", sender=BOB), False


@scenario()
def unban_with_ban_and_kick_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.member(CAROL, "ban", sender=ALICE)
    return room, room.member(CAROL, "leave", sender=ALICE), True


@scenario()
def ban_ok(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.member(BOB, "ban", sender=ALICE), True


@scenario()
def ban_non_member_target(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.member(CAROL, "ban", sender=ALICE), True


@scenario()
def ban_by_lower_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.member(ALICE, "ban", sender=BOB), False


@scenario()
def ban_by_non_member(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.member(CAROL, "ban", sender=BOB), False


@scenario()
def unknown_membership(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.member(BOB, "hover"), False


@scenario()
def member_without_membership(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.send("m.room.member", BOB, {"displayname": "b"}, state_key=BOB), False


@scenario()
def member_without_state_key(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.send("m.room.member", BOB, {"membership": "join"}), False


# ---------------------------------------------------------------- knock


@scenario()
def knock_ok(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("knock")
    return room, room.member(BOB, "knock"), int(v) >= 7


@scenario(lambda n: n >= 7)
def knock_restricted_knock(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("knock_restricted")
    return room, room.member(BOB, "knock"), int(v) >= 10


@scenario(lambda n: n >= 7)
def knock_on_public_room(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.member(BOB, "knock"), False


@scenario(lambda n: n >= 7)
def knock_for_other(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("knock")
    return room, room.member(BOB, "knock", sender=ALICE), False


@scenario(lambda n: n >= 7)
def knock_while_invited(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("knock")
    room.member(BOB, "invite", sender=ALICE)
    return room, room.member(BOB, "knock"), False


@scenario(lambda n: n >= 7)
def knock_while_banned(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("knock")
    room.member(BOB, "ban", sender=ALICE)
    return room, room.member(BOB, "knock"), False


@scenario(lambda n: n >= 7)
def knock_retract(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("knock")
    room.member(BOB, "knock")
    return room, room.member(BOB, "leave"), True


# ---------------------------------------------------------------- sender not joined, levels, state keys


@scenario()
def message_from_non_member(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.send("m.room.message", BOB, {"body": "hi"}), False


@scenario()
def message_from_left_member(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.member(BOB, "leave")
    return room, room.send("m.room.message", BOB, {"body": "hi"}), False


@scenario()
def state_below_state_default(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    return room, room.send("m.room.name", BOB, {"name": "x"}, state_key=""), False


@scenario()
def state_event_level_override(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    users = {} if room.rv.hydra else {ALICE: 100}
    room.power_levels({"users": users, "events": {"m.room.name": 0}})
    return room, room.send("m.room.name", BOB, {"name": "x"}, state_key=""), True


@scenario()
def message_below_events_default(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    users = {} if room.rv.hydra else {ALICE: 100}
    room.power_levels({"users": users, "events_default": 1})
    return room, room.send("m.room.message", BOB, {"body": "x"}), False


@scenario()
def state_without_power_levels_creator(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    return room, room.send("m.room.name", ALICE, {"name": "x"}, state_key=""), True


@scenario()
def state_without_power_levels_other(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    room.join_rules("public")
    room.member(BOB, "join")
    return room, room.send("m.room.name", BOB, {"name": "x"}, state_key=""), False


@scenario()
def state_key_other_user(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.send("org.example.state", ALICE, {}, state_key=BOB), False


@scenario()
def state_key_own_user(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    return room, room.send("org.example.state", ALICE, {}, state_key=ALICE), True


# ---------------------------------------------------------------- power levels


def _pl_room(v: str) -> Room:
    """Alice admin (100, or creator in v12), Bob 50 (mod), Carol 0."""
    room = _public_room(v, BOB, CAROL)
    users = {BOB: 50} if room.rv.hydra else {ALICE: 100, BOB: 50}
    room.power_levels({"users": users, "events": {"m.room.power_levels": 50}})
    return room


def _pl(room: Room, sender: str, **changes: Any) -> Event:
    content = dict(room.state[("m.room.power_levels", "")].content)
    for k, x in changes.items():
        if x is None:
            content.pop(k, None)
        else:
            content[k] = x
    return room.send("m.room.power_levels", sender, content, state_key="", apply=False)


def _users(room: Room, **levels: int) -> dict[str, int]:
    base = {} if room.rv.hydra else {ALICE: 100}
    names = {"bob": BOB, "carol": CAROL, "dave": DAVE}
    base.update({names[k]: x for k, x in levels.items()})
    return base


@scenario()
def pl_first_event_anything(v: str) -> tuple[Room, Event, bool]:
    room = Room(v)
    ev = room.send("m.room.power_levels", ALICE, {"users": _users(room), "ban": 1000}, state_key="")
    return room, ev, True


@scenario()
def pl_raise_other_to_own_level(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, BOB, users=_users(room, bob=50, carol=50)), True


@scenario()
def pl_raise_other_above_own_level(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, BOB, users=_users(room, bob=50, carol=51)), False


@scenario()
def pl_raise_self(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, BOB, users=_users(room, bob=60)), False


@scenario()
def pl_lower_self(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, BOB, users=_users(room, bob=10)), True


@scenario()
def pl_demote_peer(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    room.power_levels({"users": _users(room, bob=50, carol=50), "events": {"m.room.power_levels": 50}})
    return room, _pl(room, BOB, users=_users(room, bob=50, carol=0)), False


@scenario()
def pl_demote_lower(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    room.power_levels({"users": _users(room, bob=50, carol=20), "events": {"m.room.power_levels": 50}})
    return room, _pl(room, BOB, users=_users(room, bob=50)), True


@scenario()
def pl_change_named_above_own(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, BOB, ban=60), False


@scenario()
def pl_change_named_from_above_own(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    room.power_levels({"users": _users(room, bob=50), "events": {"m.room.power_levels": 50}, "kick": 80})
    return room, _pl(room, BOB, kick=10), False


@scenario()
def pl_change_named_within_own(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, BOB, ban=40, state_default=50), True


@scenario()
def pl_remove_events_entry_above_own(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    room.power_levels({"users": _users(room, bob=50),
                       "events": {"m.room.power_levels": 50, "m.room.tombstone": 100}})
    return room, _pl(room, BOB, events={"m.room.power_levels": 50}), False


@scenario()
def pl_add_events_entry_above_own(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, BOB, events={"m.room.power_levels": 50, "m.room.topic": 75}), False


@scenario()
def pl_notifications_above_own(v: str) -> tuple[Room, Event, bool]:
    # v6+ auth-checks `notifications` like `events`.
    room = _pl_room(v)
    return room, _pl(room, BOB, notifications={"room": 90}), int(v) < 6


@scenario()
def pl_string_values(v: str) -> tuple[Room, Event, bool]:
    # Stringy levels are readable until v10, which requires integers.
    room = _pl_room(v)
    return room, _pl(room, BOB, ban=" +40 ", events={"m.room.power_levels": "50"}), int(v) < 10


@scenario()
def pl_string_user_value(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    users: dict[str, Any] = dict(_users(room, bob=50))
    users[CAROL] = "010"
    return room, _pl(room, BOB, users=users), int(v) < 10


@scenario()
def pl_string_user_level_counts(v: str) -> tuple[Room, Event, bool]:
    # Pre-v10 a stringy level of the sender counts as that integer.
    room = _public_room(v, BOB)
    users: dict[str, Any] = dict(_users(room))
    users[BOB] = "60"
    room.power_levels({"users": users})
    return room, room.send("m.room.name", BOB, {"name": "x"}, state_key=""), int(v) < 10


@scenario()
def pl_users_invalid_user_id(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    users: dict[str, Any] = dict(_users(room, bob=50))
    users["carol"] = 0
    return room, _pl(room, BOB, users=users), False


@scenario()
def pl_users_non_integer(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    users: dict[str, Any] = dict(_users(room, bob=50))
    users[CAROL] = "lots"
    return room, _pl(room, BOB, users=users), False


@scenario(lambda n: n >= 10)
def pl_events_not_object(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, ALICE, events=[1]), False


@scenario()
def pl_needs_state_level(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, CAROL, users=_users(room, bob=50)), False


@scenario(lambda n: n == 12)
def pl_names_creator_v12(v: str) -> tuple[Room, Event, bool]:
    room = _pl_room(v)
    return room, _pl(room, ALICE, users={ALICE: 100, BOB: 50}), False


@scenario(lambda n: n == 12)
def pl_names_additional_creator_v12(v: str) -> tuple[Room, Event, bool]:
    room = Room(v, create_content={"additional_creators": [BOB]})
    return room, room.power_levels({"users": {BOB: 50}}), False


@scenario(lambda n: n == 12)
def v12_creator_outranks_any_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.power_levels({"users": {BOB: 2**53 - 1}, "state_default": 2**53 - 1})
    return room, room.member(BOB, "ban", sender=ALICE), True


@scenario(lambda n: n == 12)
def v12_additional_creator_cannot_be_kicked(v: str) -> tuple[Room, Event, bool]:
    room = Room(v, create_content={"additional_creators": [BOB]})
    room.join_rules("public")
    room.member(BOB, "join")
    return room, room.member(BOB, "leave", sender=ALICE), False


@scenario(lambda n: n == 12)
def v12_additional_creator_sets_state(v: str) -> tuple[Room, Event, bool]:
    room = Room(v, create_content={"additional_creators": [BOB]})
    room.power_levels({"users": {}, "state_default": 100})
    room.join_rules("public")
    room.member(BOB, "join")
    return room, room.send("m.room.topic", BOB, {"topic": "x"}, state_key=""), True


@scenario(lambda n: n == 12)
def v12_wrong_room_id(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    room.room_id = "!doesnotexist"
    return room, room.send("m.room.message", ALICE, {"body": "x"}), False


# ---------------------------------------------------------------- redactions, aliases


@scenario()
def redaction_by_low_level_other_server(v: str) -> tuple[Room, Event, bool]:
    # v1/v2: redact level or same event_id domain; v3+: not an auth-rules matter.
    room = _public_room(v, BOB)
    target = room.send("m.room.message", ALICE, {"body": "x"})
    extra: dict[str, Any] = {"redacts": target.event_id}
    content: dict[str, Any] = {"redacts": target.event_id} if room.rv.updated_redaction_rules else {}
    ev = room.send("m.room.redaction", BOB, content, extra=extra)
    return room, ev, int(v) >= 3


@scenario(lambda n: n <= 2)
def redaction_same_domain_v1(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    target = room.send("m.room.message", BOB, {"body": "x"})
    ev = room.send("m.room.redaction", BOB, {}, extra={"redacts": target.event_id})
    return room, ev, True


@scenario(lambda n: n <= 2)
def redaction_by_moderator_v1(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    target = room.send("m.room.message", BOB, {"body": "x"})
    ev = room.send("m.room.redaction", ALICE, {}, extra={"redacts": target.event_id})
    return room, ev, True


@scenario()
def redaction_events_level(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    room.power_levels({"users": _users(room), "events": {"m.room.redaction": 10}})
    target = room.send("m.room.message", BOB, {"body": "x"})
    content: dict[str, Any] = {"redacts": target.event_id} if room.rv.updated_redaction_rules else {}
    ev = room.send("m.room.redaction", BOB, content, extra={"redacts": target.event_id})
    return room, ev, False


@scenario()
def aliases_other_domain(v: str) -> tuple[Room, Event, bool]:
    # v1-5: allowed iff state_key is the sender's domain, even for non-members.
    room = _public_room(v)
    ev = room.send("m.room.aliases", BOB, {"aliases": ["#x:b.org"]}, state_key="b.org")
    return room, ev, int(v) <= 5


@scenario(lambda n: n <= 5)
def aliases_wrong_domain(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v, BOB)
    ev = room.send("m.room.aliases", BOB, {"aliases": ["#x:a.org"]}, state_key="a.org")
    return room, ev, False


@scenario()
def aliases_by_admin(v: str) -> tuple[Room, Event, bool]:
    room = _public_room(v)
    ev = room.send("m.room.aliases", ALICE, {"aliases": ["#x:a.org"]}, state_key="a.org")
    return room, ev, True


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize("fn,version", _cases())
def test_scenario(fn: Scenario, version: str) -> None:
    room, ev, expected = fn(version)
    if expected:
        room.check(ev)
    else:
        with pytest.raises(AuthError) as info:
            room.check(ev)
        assert info.value.errcode == "M_FORBIDDEN"
        assert isinstance(info.value.reason, str) and info.value.reason


def test_scenario_count() -> None:
    assert len(_cases()) > 800


# ---------------------------------------------------------------- helpers and API


def test_rejected_auth_event_rejects() -> None:
    room = _public_room("10", BOB)
    ev = room.send("m.room.message", BOB, {"body": "x"})
    room.check(ev)
    with pytest.raises(AuthError):
        room.check(ev, rejected_event_ids={room.state[("m.room.member", BOB)].event_id})


def test_missing_auth_event_rejects() -> None:
    room = _public_room("10", BOB)
    ev = room.send("m.room.message", BOB, {"body": "x"})
    supplied = [e for e in room.events.values() if e.event_id != room.state[("m.room.member", BOB)].event_id]
    with pytest.raises(AuthError):
        check_event_auth(ev, supplied)


def test_v12_create_event_must_be_supplied() -> None:
    room = _public_room("12", BOB)
    ev = room.send("m.room.message", BOB, {"body": "x"})
    supplied = [e for e in room.events.values() if e.type != "m.room.create"]
    with pytest.raises(AuthError):
        check_event_auth(ev, supplied)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_power_level_helpers(version: str) -> None:
    room = _public_room(version, BOB)
    hydra = room.rv.hydra
    st = room.state
    assert get_user_power_level(ALICE, st) == (float("inf") if hydra else 100)
    assert get_user_power_level(BOB, st) == 0
    room.power_levels({"users": _users(room, bob=42), "users_default": 3, "kick": 7,
                       "events": {"m.room.topic": 9}})
    assert get_user_power_level(BOB, st) == 42
    assert get_user_power_level(CAROL, st) == 3
    assert get_named_level(st, "kick") == 7
    assert get_named_level(st, "ban") == 50
    assert get_power_level_for_event_type("m.room.topic", True, st) == 9
    assert get_power_level_for_event_type("m.room.name", True, st) == 50
    assert get_power_level_for_event_type("m.room.message", False, st) == 0


def test_no_power_levels_creator_has_100_until_v12() -> None:
    for v in ALL_VERSIONS:
        room = Room(v)
        expected = float("inf") if room.rv.hydra else 100
        assert get_user_power_level(ALICE, room.state) == expected
        assert get_user_power_level(BOB, room.state) == 0


def test_is_power_event() -> None:
    room = _public_room("10", BOB)
    assert is_power_event(room.state[("m.room.power_levels", "")])
    assert is_power_event(room.state[("m.room.join_rules", "")])
    assert not is_power_event(room.create)
    assert is_power_event(room.member(BOB, "ban", sender=ALICE))
    assert not is_power_event(room.member(CAROL, "leave"))
    assert is_power_event(room.member(CAROL, "leave", sender=ALICE))
    assert not is_power_event(room.send("m.room.message", ALICE, {}))


def test_auth_types_for_event() -> None:
    rv = ROOM_VERSIONS["9"]
    got = auth_types_for_event(rv, "m.room.member", BOB, BOB,
                               {"membership": "join", "join_authorised_via_users_server": ALICE})
    assert got == {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB),
                   ("m.room.join_rules", ""), ("m.room.member", ALICE)}
    got = auth_types_for_event(ROOM_VERSIONS["12"], "m.room.member", ALICE, BOB,
                               {"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}})
    assert got == {("m.room.power_levels", ""), ("m.room.member", ALICE), ("m.room.member", BOB),
                   ("m.room.join_rules", ""), ("m.room.third_party_invite", "t")}
    assert auth_types_for_event(rv, "m.room.create", ALICE, "", {}) == set()
    # Malformed content never raises.
    assert ("m.room.member", BOB) in auth_types_for_event(
        rv, "m.room.member", BOB, BOB, {"membership": "invite", "third_party_invite": 5})


@pytest.mark.parametrize("uid,ok", [
    (ALICE, True), ("@a:[::1]:8448", True), ("@a:1.2.3.4", True), ("@:a.org", False),
    ("alice:a.org", False), ("@alice", False), ("@alice:", False), ("@a:b c", False),
    ("@" + "a" * 250 + ":b.org", False), (5, False),
])
def test_is_valid_user_id(uid: Any, ok: bool) -> None:
    assert is_valid_user_id(uid) is ok


@pytest.mark.parametrize("bad", [
    {"membership": ["join"]}, {"membership": None}, {"membership": "join", "join_authorised_via_users_server": 5},
    {"membership": "invite", "third_party_invite": {"signed": {"mxid": BOB, "token": ["t"]}}},
    {"membership": "invite", "third_party_invite": {"signed": {"mxid": BOB, "token": "tok",
                                                               "signatures": {"x": {"ed25519:1": 5}}}}},
])
def test_malformed_member_content_is_auth_error(bad: dict[str, Any]) -> None:
    for v in ("1", "9", "12"):
        room = _tpi_room(v)
        room.join_rules("restricted")
        ev = room.send("m.room.member", ALICE, bad, state_key=BOB)
        with pytest.raises(AuthError):
            room.check(ev)


def test_check_auth_rules_against_state_map() -> None:
    room = _public_room("11", BOB)
    ev = room.send("m.room.message", BOB, {"body": "x"})
    check_auth_rules(ev, room.state)
    state = dict(room.state)
    del state[("m.room.member", BOB)]
    with pytest.raises(AuthError):
        check_auth_rules(ev, state)
    del state[("m.room.create", "")]
    with pytest.raises(AuthError):
        check_auth_rules(ev, state)


def test_v12_room_id_must_be_the_create_event_id() -> None:
    room = _public_room("12", BOB)
    ev = room.send("m.room.message", BOB, {"body": "x"})
    check_auth_rules(ev, room.state)
    ev.pdu["room_id"] = "!" + "A" * 43
    moved = Event(ev.pdu, room.rv)
    with pytest.raises(AuthError, match="create event"):
        check_auth_rules(moved, room.state)


def test_v12_rejected_create_rejects() -> None:
    room = _public_room("12", BOB)
    ev = room.send("m.room.message", BOB, {"body": "x"})
    with pytest.raises(AuthError, match="rejected"):
        room.check(ev, rejected_event_ids={room.create.event_id})


def test_v1_event_without_event_id_is_auth_error() -> None:
    room = _public_room("1", BOB)
    ev = room.send("m.room.message", BOB, {"body": "x"})
    del room.create.pdu["event_id"]
    broken = Event(room.create.pdu, room.rv)
    with pytest.raises(AuthError):
        check_event_auth(ev, [broken, *[e for e in room.events.values() if e.type != "m.room.create"]])
