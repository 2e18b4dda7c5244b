"""Differential tests of the authorization rules against Synapse (test-only oracle).

Hypothesis generates random room histories per room version: membership changes of
every kind (joins under every join rule, invites, third-party invites, kicks, bans,
unbans, knocks, restricted joins with and without a valid authoriser), power-level
changes (raising, lowering, stringy values, notifications, v12 creators), messages,
state events with user-ID state keys, aliases, redactions, and auth-event lists that
are sometimes tampered with (dropped, duplicated, unexpected). Every candidate event is
checked by both implementations twice:

* full check: our `check_event_auth` vs Synapse's `validate_event_for_room_version` +
  `check_state_independent_auth_rules` + `check_state_dependent_auth_rules` on the
  auth events the event cites;
* state check (soft-fail style): our `check_auth_rules` vs Synapse's
  `check_state_dependent_auth_rules` against the whole current state.

The history follows our decision (an allowed state event becomes current state).

Known, deliberate differences (each excluded explicitly and counted, see `_deviation`):

* `federate-target`: Synapse rejects membership events whose *target* is on another
  server than the creator when `m.federate` is false; the spec only looks at the
  sender's server (rule "m.federate").
* `authoriser-non-join`: the spec (v8+ rule 4.2 / 5.2) requires the authorising
  server's signature whenever `join_authorised_via_users_server` is present; Synapse
  only checks it for `membership: join`.

Synapse crashes (counted as `synapse-crash`, not compared): an m.room.third_party_invite
whose `public_key` is not a 32-byte key makes Synapse raise ValueError before it tries
the valid keys in `public_keys`; the spec allows if *any* key matches, and so do we.

CI runs a fixed, derandomized set; AXON_LONG_FUZZ=1 runs many more histories."""
from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import pytest
import signedjson.key
import signedjson.sign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.events.auth import AuthError, check_auth_rules, check_event_auth
from libs.events.event import Event
from libs.events.unpadded_base64 import encode_base64

from .test_auth_builder import ALICE, BOB, CAROL, DAVE, Room

pytest.importorskip("synapse.event_auth")
from synapse import event_auth as syn_auth  # noqa: E402
from synapse.api.errors import SynapseError  # noqa: E402
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS  # noqa: E402
from synapse.events import make_event_from_dict  # noqa: E402

LONG = os.environ.get("AXON_LONG_FUZZ") == "1"
N_HISTORIES = int(os.environ.get("AXON_AUTH_FUZZ_HISTORIES", "400" if LONG else "14"))
STEPS = 40
SETTINGS = settings(
    max_examples=N_HISTORIES, derandomize=not LONG, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
VERSIONS = [str(n) for n in range(1, 13)]
EVE = "@eve:e.org"
USERS = [ALICE, BOB, CAROL, DAVE, EVE]
KEYS = [signedjson.key.generate_signing_key("1"), signedjson.key.generate_signing_key("2")]

STATS: Counter[str] = Counter()
CRASHES: list[str] = []


def _dom(uid: str) -> str:
    return uid.split(":", 1)[1]


# ---------------------------------------------------------------- the oracle


class _Store:
    """The slice of Synapse's event store that check_state_independent_auth_rules uses."""

    def __init__(self, events: dict[str, Any]):
        self.events = events

    async def get_events(self, event_ids: Any, redact_behaviour: Any = None,
                         get_prev_content: bool = False, allow_rejected: bool = False) -> dict[str, Any]:
        return {e: self.events[e] for e in event_ids if e in self.events}


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    # The fake store never suspends, so one send() drives the coroutine to completion.
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("coroutine suspended")


class Oracle:
    def __init__(self, room: Room):
        self.room = room
        self.rv = KNOWN_ROOM_VERSIONS[room.rv.identifier]
        self.sevents: dict[str, Any] = {}

    def sev(self, ev: Event) -> Any:
        s = self.sevents.get(ev.event_id)
        if s is None:
            s = make_event_from_dict(copy.deepcopy(ev.pdu), self.rv)
            assert s.event_id == ev.event_id, "event IDs differ from Synapse's"
            self.sevents[ev.event_id] = s
        return s

    def full(self, ev: Event) -> bool | None:
        if self.room.rv.hydra and ("$" + self.room.room_id[1:]) in ev.auth_event_ids:
            # Synapse refuses such v12 PDUs when parsing them (federation_base), before auth.
            return False
        for e in self.room.events.values():
            self.sev(e)
        s = self.sev(ev)
        try:
            syn_auth.validate_event_for_room_version(s)
            _run(syn_auth.check_state_independent_auth_rules(_Store(self.sevents), s))
            if s.type != "m.room.create":
                auth = [self.sevents[i] for i in s.auth_event_ids() if i in self.sevents]
                syn_auth.check_state_dependent_auth_rules(s, auth)
        except SynapseError:
            return False
        except (KeyError, TypeError, ValueError, AssertionError, RuntimeError) as e:
            CRASHES.append(f"{type(e).__name__}: {e} :: {ev.pdu.get('type')} {ev.content}")
            return None  # Synapse crashed on this input
        return True

    def state(self, ev: Event) -> bool | None:
        s = self.sev(ev)
        try:
            syn_auth.validate_event_for_room_version(s)
            syn_auth.check_state_dependent_auth_rules(s, [self.sev(e) for e in self.room.state.values()])
        except SynapseError:
            return False
        except (KeyError, TypeError, ValueError, AssertionError, RuntimeError):
            return None
        return True


def _ours(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except AuthError:
        return False
    return True


def _deviation(room: Room, ev: Event, ours: bool, theirs: bool) -> str | None:
    c = ev.content
    if ev.type == "m.room.member" and ours and not theirs:
        create = room.create
        if create.content.get("m.federate", True) is False and ev.state_key is not None \
                and _dom(ev.state_key) != _dom(create.sender):
            return "federate-target"
    if ev.type == "m.room.member" and not ours and theirs and c.get("membership") != "join" \
            and "join_authorised_via_users_server" in c and room.rv.restricted_join_rule:
        return "authoriser-non-join"
    return None


# ---------------------------------------------------------------- history generation


def _level(draw: Any, room: Room) -> Any:
    choices: list[Any] = [0, 10, 25, 50, 51, 75, 100, 101]
    if not room.rv.enforce_int_power_levels:
        choices += ["50", " +75 ", "0100"]
    elif draw(st.integers(0, 20)) == 0:
        choices += ["50"]
    return draw(st.sampled_from(choices))


def _pl_content(draw: Any, room: Room) -> dict[str, Any]:
    old = room.state.get(("m.room.power_levels", ""))
    content: dict[str, Any] = copy.deepcopy(old.content) if old is not None else {}
    for name in draw(st.lists(st.sampled_from(
            ["users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"]), max_size=3)):
        if draw(st.booleans()) and name in content:
            del content[name]
        else:
            content[name] = _level(draw, room)
    users = dict(content.get("users", {}))
    for u in draw(st.lists(st.sampled_from(USERS), max_size=3)):
        if draw(st.booleans()) and u in users:
            del users[u]
        else:
            users[u] = _level(draw, room)
    if room.rv.hydra and draw(st.integers(0, 9)) != 0:
        for creator in [room.create.sender, *room.create.content.get("additional_creators", [])]:
            users.pop(creator, None)
    content["users"] = users
    for section, keys in (("events", ["m.room.name", "m.room.power_levels", "m.room.message", "m.room.redaction",
                                      "m.room.topic"]), ("notifications", ["room"])):
        if draw(st.integers(0, 2)) == 0:
            sec = dict(content.get(section, {}))
            for k in draw(st.lists(st.sampled_from(keys), max_size=2)):
                if draw(st.booleans()) and k in sec:
                    del sec[k]
                else:
                    sec[k] = _level(draw, room)
            content[section] = sec
    return content


def _tpi_member(draw: Any, room: Room, sender: str, target: str) -> dict[str, Any]:
    token = draw(st.sampled_from(["t1", "t2", "t3"]))
    mxid = target if draw(st.integers(0, 5)) else draw(st.sampled_from(USERS))
    key = draw(st.sampled_from(KEYS))
    signed = signedjson.sign.sign_json({"mxid": mxid, "token": token, "sender": sender}, "id.org", key)
    if draw(st.integers(0, 9)) == 0:
        signed["token"] = token + "x"  # tampered after signing
    return {"membership": "invite", "third_party_invite": {"display_name": "x", "signed": signed}}


def _candidate(draw: Any, room: Room) -> Event:
    # Mostly joined senders, so that the deeper rules are reached.
    joined = sorted(k[1] for k, e in room.state.items() if k[0] == "m.room.member" and e.membership == "join")
    sender = draw(st.sampled_from(joined)) if joined and draw(st.integers(0, 3)) else draw(st.sampled_from(USERS))
    kind = draw(st.sampled_from(
        ["member"] * 6 + ["pl"] * 3 + ["join_rules"] * 2 + ["message", "state", "tpi", "tpi_event",
                                                           "aliases", "redaction"]))
    content: dict[str, Any]
    state_key: str | None = None
    extra: dict[str, Any] = {}
    etype = "m.room.member"
    if kind == "member":
        target = sender if draw(st.booleans()) else draw(st.sampled_from(USERS))
        membership = draw(st.sampled_from(["join", "join", "invite", "leave", "leave", "ban", "knock", "hover"]))
        content = {"membership": membership}
        if draw(st.integers(0, 3)) == 0:
            authoriser = draw(st.sampled_from(USERS))
            content["join_authorised_via_users_server"] = authoriser
            if draw(st.integers(0, 4)):
                extra["signatures"] = {_dom(sender): {"ed25519:k": "c2ln"}, _dom(authoriser): {"ed25519:k": "c2ln"}}
        state_key = target
    elif kind == "tpi":
        target = draw(st.sampled_from(USERS))
        content = _tpi_member(draw, room, sender, target)
        state_key = target
    elif kind == "tpi_event":
        etype = "m.room.third_party_invite"
        key = draw(st.sampled_from(KEYS))
        pub = encode_base64(key.verify_key.encode())
        content = {"public_key": pub} if draw(st.booleans()) else \
            {"public_key": "AAAA", "public_keys": [{"public_key": pub}]}
        state_key = draw(st.sampled_from(["t1", "t2"]))
    elif kind == "pl":
        etype = "m.room.power_levels"
        content = _pl_content(draw, room)
        state_key = ""
    elif kind == "join_rules":
        etype = "m.room.join_rules"
        content = {"join_rule": draw(st.sampled_from(
            ["public", "invite", "knock", "restricted", "knock_restricted", "private"]))}
        state_key = ""
    elif kind == "message":
        etype = "m.room.message"
        content = {"body": "hi"}
    elif kind == "state":
        etype = draw(st.sampled_from(["m.room.name", "m.room.topic", "org.example.state"]))
        content = {"x": 1}
        state_key = draw(st.sampled_from(["", "", sender, draw(st.sampled_from(USERS)), "@", "x"]))
    elif kind == "aliases":
        etype = "m.room.aliases"
        content = {"aliases": []}
        state_key = draw(st.sampled_from([_dom(sender), "a.org", "b.org"]))
    else:
        etype = "m.room.redaction"
        target_id = draw(st.sampled_from(sorted(room.events)))
        extra["redacts"] = target_id
        content = {"redacts": target_id} if room.rv.updated_redaction_rules else {}

    auth = room.select_auth(etype, sender, state_key, content)
    tamper = draw(st.integers(0, 11))
    if tamper == 0 and auth:
        auth.pop(draw(st.integers(0, len(auth) - 1)))
        STATS["tamper:drop"] += 1
    elif tamper == 1:
        auth.append(draw(st.sampled_from(sorted(room.state.values(), key=lambda e: e.event_id))))
        STATS["tamper:extra"] += 1
    elif tamper == 2:
        state_events = [e for e in room.events.values() if e.is_state() and e not in auth]
        if state_events:
            auth.append(draw(st.sampled_from(sorted(state_events, key=lambda e: e.event_id))))
            STATS["tamper:stale"] += 1
    prev = None
    if kind == "member" and draw(st.integers(0, 7)) == 0:
        prev = [room.create]
    pdu = room.pdu(etype, sender, content, state_key=state_key, auth=auth, prev=prev, extra=extra)
    return room.event(pdu)


def _new_room(draw: Any, version: str) -> Room:
    create: dict[str, Any] = {}
    if draw(st.integers(0, 7)) == 0:
        create["m.federate"] = False
    if version == "12" and draw(st.booleans()):
        create["additional_creators"] = draw(st.lists(st.sampled_from([BOB, CAROL]), max_size=2, unique=True))
    room = Room(version, create_content=create, join_creator=draw(st.integers(0, 9)) != 0)
    return room


FAILURES: list[str] = []


def _compare(label: str, room: Room, ev: Event, ours: bool, theirs: bool | None) -> None:
    if theirs is None:
        STATS[f"{label}:synapse-crash"] += 1
        return
    if ours == theirs:
        STATS[f"{label}:agree"] += 1
        STATS[f"{label}:agree:{'allow' if ours else 'deny'}"] += 1
        return
    dev = _deviation(room, ev, ours, theirs)
    if dev is not None:
        STATS[f"{label}:excluded:{dev}"] += 1
        return
    FAILURES.append(f"{label} v{room.rv.identifier} ours={ours} synapse={theirs}: {ev.pdu}")


def _history(data: Any, version: str) -> None:
    room = _new_room(data.draw, version)
    oracle = Oracle(room)
    for ev in list(room.events.values()):
        _compare("full", room, ev, _ours(check_event_auth, ev, list(room.events.values())), oracle.full(ev))
    for _ in range(STEPS):
        ev = _candidate(data.draw, room)
        ours_full = _ours(check_event_auth, ev, list(room.events.values()))
        _compare("full", room, ev, ours_full, oracle.full(ev))
        _compare("state", room, ev, _ours(check_auth_rules, ev, room.state), oracle.state(ev))
        if ours_full and ev.is_state():
            room.state[ev.state_tuple] = ev
            room.last = ev
    assert not FAILURES, "\n".join(FAILURES[:5])


@pytest.mark.timeout(0 if LONG else 300)
@pytest.mark.parametrize("version", VERSIONS)
def test_auth_agrees_with_synapse(version: str) -> None:
    @SETTINGS
    @given(st.data())
    def run(data: Any) -> None:
        _history(data, version)

    FAILURES.clear()
    before = STATS["full:agree"] + STATS["state:agree"]
    run()
    assert STATS["full:agree"] + STATS["state:agree"] > before


def test_zz_report_differential_counts() -> None:
    """Prints the tallies (pytest -s) and checks that both outcomes were exercised."""
    if not STATS:
        pytest.skip("differential tests did not run")
    for k in sorted(STATS):
        print(f"auth differential {k}: {STATS[k]}")
    assert STATS["full:agree:allow"] > 0 and STATS["full:agree:deny"] > 0
    assert STATS["state:agree:allow"] > 0 and STATS["state:agree:deny"] > 0
