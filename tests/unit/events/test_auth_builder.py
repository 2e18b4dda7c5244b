"""A compact builder of test rooms for the auth-rule tests (and its own sanity tests).

`Room("9")` starts a room of that version with a create event and the creator's join;
`room.send(type, sender, content, state_key=...)` builds a PDU whose auth events are
selected from the room's current state (spec auth events selection), and, with
`apply=True` (the default for state events), makes it current state without checking.
`room.check(event)` runs the full `check_event_auth` against the room's events.
"""
from __future__ import annotations

import itertools
from typing import Any

import pytest

from libs.events.auth import AuthError, auth_types_for_event, check_event_auth
from libs.events.event import Event
from libs.events.room_versions import ROOM_VERSIONS, EventFormat, RoomVersion

ALL_VERSIONS = [str(n) for n in range(1, 13)]

ALICE = "@alice:a.org"
BOB = "@bob:b.org"
CAROL = "@carol:c.org"
DAVE = "@dave:a.org"

_DUMMY_SIG = "c2lnbmF0dXJl"


def _domain(uid: str) -> str:
    return uid.split(":", 1)[1]


class Room:
    """A room under construction. Keeps every event by ID and the current state."""

    def __init__(
        self,
        version: str,
        creator: str = ALICE,
        *,
        create_content: dict[str, Any] | None = None,
        join_creator: bool = True,
    ):
        self.rv: RoomVersion = ROOM_VERSIONS[version]
        self.creator = creator
        self.events: dict[str, Event] = {}
        self.state: dict[tuple[str, str], Event] = {}
        self._counter = itertools.count(1)
        self.last: Event | None = None
        content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        if create_content:
            content.update(create_content)
        self.room_id = "" if self.rv.hydra else f"!room:{_domain(creator)}"
        self.create = self.send("m.room.create", creator, content, state_key="")
        if self.rv.hydra:
            self.room_id = "!" + self.create.event_id[1:]
        if join_creator:
            self.send("m.room.member", creator, {"membership": "join"}, state_key=creator)

    # -- building

    def pdu(
        self,
        etype: str,
        sender: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        prev: list[Event] | None = None,
        auth: list[Event] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        n = next(self._counter)
        if auth is None:
            auth = self.select_auth(etype, sender, state_key, content)
        if prev is None:
            prev = [self.last] if self.last is not None else []
        v1 = self.rv.event_format is EventFormat.V1
        pdu: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "content": content,
            "depth": n,
            "origin_server_ts": 1_700_000_000_000 + n,
            "prev_events": [[e.event_id, {"sha256": "aGFzaA"}] if v1 else e.event_id for e in prev],
            "auth_events": [[e.event_id, {"sha256": "aGFzaA"}] if v1 else e.event_id for e in auth],
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {_domain(sender): {"ed25519:k": _DUMMY_SIG}},
        }
        if not (self.rv.hydra and etype == "m.room.create"):
            pdu["room_id"] = self.room_id
        if v1:
            pdu["event_id"] = f"${n}:{_domain(sender)}"
        if state_key is not None:
            pdu["state_key"] = state_key
        if extra:
            pdu.update(extra)
        return pdu

    def select_auth(
        self, etype: str, sender: str, state_key: str | None, content: dict[str, Any]
    ) -> list[Event]:
        types = auth_types_for_event(self.rv, etype, sender, state_key, content)
        return [self.state[k] for k in sorted(types) if k in self.state]

    def event(self, pdu: dict[str, Any]) -> Event:
        ev = Event(pdu, self.rv)
        self.events[ev.event_id] = ev
        return ev

    def send(
        self,
        etype: str,
        sender: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        apply: bool | None = None,
        **kw: Any,
    ) -> Event:
        ev = self.event(self.pdu(etype, sender, content, state_key=state_key, **kw))
        if apply is None:
            apply = state_key is not None
        if apply:
            self.state[(etype, state_key or "")] = ev
            self.last = ev
        return ev

    # -- shorthands for common state

    def member(self, user: str, membership: str, sender: str | None = None, **content: Any) -> Event:
        return self.send(
            "m.room.member", sender or user, {"membership": membership, **content}, state_key=user
        )

    def join_rules(self, rule: str, sender: str | None = None, **content: Any) -> Event:
        return self.send("m.room.join_rules", sender or self.creator, {"join_rule": rule, **content}, state_key="")

    def power_levels(self, content: dict[str, Any], sender: str | None = None) -> Event:
        return self.send("m.room.power_levels", sender or self.creator, content, state_key="")

    # -- checking

    def check(self, ev: Event, **kw: Any) -> None:
        check_event_auth(ev, list(self.events.values()), **kw)

    def allowed(self, ev: Event) -> bool:
        try:
            self.check(ev)
            return True
        except AuthError:
            return False


# ---------------------------------------------------------------- builder sanity


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_builder_room_is_valid(version: str) -> None:
    room = Room(version)
    # The create event and the creator's join must themselves pass.
    for ev in list(room.events.values()):
        room.check(ev)
    if room.rv.hydra:
        assert room.room_id == "!" + room.create.event_id[1:]
        assert room.create.event_id not in room.state[("m.room.member", ALICE)].auth_event_ids
    else:
        assert room.create.event_id in room.state[("m.room.member", ALICE)].auth_event_ids
