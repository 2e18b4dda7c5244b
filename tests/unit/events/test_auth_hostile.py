"""Hostile and malformed inputs to the auth rules: only AuthError may come out, and
nothing may take long."""
from __future__ import annotations

import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.events.auth import AuthError, auth_types_for_event, check_auth_rules, check_event_auth, is_power_event
from libs.events.event import Event
from libs.events.room_versions import ROOM_VERSIONS

from .strategies import JSON, pdu
from .test_auth_builder import ALICE, BOB, Room

LONG = os.environ.get("AXON_LONG_FUZZ") == "1"
SETTINGS = settings(max_examples=2000 if LONG else 150, derandomize=not LONG, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _only_auth_error(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except AuthError as e:
        assert isinstance(e.reason, str)


@pytest.mark.parametrize("version", ["1", "6", "9", "10", "12"])
def test_random_pdus_against_a_room(version: str) -> None:
    room = Room(version)
    room.join_rules("public")
    room.member(BOB, "join")
    room.power_levels({"users": {} if room.rv.hydra else {ALICE: 100}})
    rv = room.rv

    @settings(SETTINGS, max_examples=1000 if LONG else 50)
    @given(pdu(int(version)), st.booleans())
    def run(raw: dict[str, Any], relink: bool) -> None:
        if relink:
            # Point it at the room's real auth events so the deeper rules run.
            raw["room_id"] = room.room_id
            auth = room.select_auth(raw.get("type", ""), raw.get("sender", ""), raw.get("state_key"),
                                    raw.get("content") if isinstance(raw.get("content"), dict) else {})
            raw["auth_events"] = ([[e.event_id, {"sha256": "x"}] for e in auth] if version in ("1", "2")
                                  else [e.event_id for e in auth])
        ev = Event(raw, rv)
        _only_auth_error(check_event_auth, ev, list(room.events.values()))
        _only_auth_error(check_auth_rules, ev, room.state)
        is_power_event(ev)
        auth_types_for_event(rv, ev.type, ev.sender, ev.state_key, ev.content)

    run()


@pytest.mark.parametrize("version", ["3", "12"])
def test_arbitrary_content_in_every_auth_relevant_type(version: str) -> None:
    room = Room(version)
    room.join_rules("public")

    @settings(SETTINGS, max_examples=400 if LONG else 40)
    @given(JSON, JSON)
    def run(content: Any, extra: Any) -> None:
        for etype in ("m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.create",
                      "m.room.third_party_invite", "m.room.aliases", "m.room.redaction"):
            c = content if isinstance(content, dict) else {"membership": content, "users": extra}
            ev = room.send(etype, ALICE, c, state_key=ALICE if etype == "m.room.member" else "", apply=False)
            _only_auth_error(room.check, ev)
            # Hostile state: the same content as current power levels / join rules / create.
            state = dict(room.state)
            state[(etype, "")] = ev
            msg = room.send("m.room.message", ALICE, {"body": "x"}, apply=False)
            _only_auth_error(check_auth_rules, msg, state)
            _only_auth_error(check_auth_rules, room.member(BOB, "join", apply=False), state)
        room.events = {k: e for k, e in room.events.items() if e in room.state.values()}

    run()


@pytest.mark.parametrize("value,versions", [
    ("9" * 100_000, ("1", "9", "10")), ("0" * 100_000 + "1", ("1", "9", "10")),
    (" " * 100_000 + "x", ("1", "9", "10")), ("0" * 100_000 + "x", ("1", "9", "10")),
    (True, ("1", "9", "10")), (None, ("1", "9", "10")), ([], ("1", "9", "10")), ({}, ("1", "9", "10")),
    ("１２", ("1", "9", "10")),
    # Not representable in canonical JSON: only v1/v2 events (which carry their IDs) can hold them.
    (10**300, ("1", "2")), (-(10**300), ("1", "2")), (1e308, ("1", "2")), (float("inf"), ("1", "2")),
    (float("nan"), ("1", "2")), (50.7, ("1", "2")),
])
def test_hostile_power_level_values_are_fast_and_typed(value: Any, versions: tuple[str, ...]) -> None:
    for version in versions:
        room = Room(version)
        room.join_rules("public")
        room.member(BOB, "join")
        room.power_levels({"users": {ALICE: 100, BOB: value}, "ban": value, "events": {"m.room.name": value},
                           "notifications": {"room": value}})
        t0 = time.perf_counter()
        for ev in (
            room.send("m.room.name", BOB, {"name": "x"}, state_key="", apply=False),
            room.member(ALICE, "ban", sender=BOB, apply=False),
            room.power_levels({"users": {ALICE: 100, BOB: value}, "ban": value}, sender=BOB),
        ):
            _only_auth_error(room.check, ev)
        assert time.perf_counter() - t0 < 1.0


def test_non_dict_content_and_odd_fields() -> None:
    room = Room("11")
    rv = ROOM_VERSIONS["11"]
    for raw in (
        {"type": "m.room.member", "content": "join", "sender": BOB, "state_key": BOB},
        {"type": 5, "content": None, "sender": None, "state_key": 7, "auth_events": "x", "prev_events": {}},
        {"type": "m.room.power_levels", "content": {"users": [ALICE]}, "sender": ALICE, "state_key": ""},
        {"type": "m.room.create", "content": {"room_version": ["11"]}, "sender": ALICE, "room_id": "!r:a.org"},
        {"type": "m.room.create", "content": {}, "sender": "nocolon", "room_id": "!nocolon"},
    ):
        raw = {**raw, "room_id": raw.get("room_id", room.room_id), "depth": 1, "origin_server_ts": 0}
        ev = Event(raw, rv)
        with pytest.raises(AuthError):
            room.check(ev)
