"""The checks of a send_join answer (`MembershipPerformer.verify_send_join`) against
hostile or broken answers, without a network: the resident server's keys are in the
keyring's store already."""
from __future__ import annotations

import time
from typing import Any

import pytest

from libs.config.model import DatabaseConfig
from libs.errors import MatrixError
from libs.events.builder import build_event
from libs.events.room_versions import get_room_version
from libs.events.server_keys import build_server_keys, verify_server_keys
from libs.events.signing import generate_signing_key
from libs.storage import open_database
from services.federationapi.keyring import KeyRing, OwnKeys
from services.federationapi.perform import MembershipPerformer, federation_form, stripped_state
from services.federationapi.storage.store import MIGRATIONS, FederationStore

V11 = get_room_version("11")
RES, US = generate_signing_key("res"), generate_signing_key("us")
ROOM = "!room:res.test"
ALICE, BOB = "@alice:res.test", "@bob:us.test"


class Room:
    """A tiny room on res.test, built and signed event by event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ids: dict[str, str] = {}
        self.depth = 0
        self.now = int(time.time() * 1000)

    def add(self, name: str, type: str, content: dict[str, Any], auth: list[str], state_key: str = "",
            sender: str = ALICE, key: Any = RES, server: str = "res.test") -> dict[str, Any]:
        self.depth += 1
        prev = [self.ids[self.events_order[-1]]] if self.events else []
        ev = build_event(V11, type=type, sender=sender, room_id=ROOM, content=content, prev_events=prev,
                         auth_events=[self.ids[a] for a in auth], depth=self.depth, origin_server_ts=self.now,
                         server_name=server, signing_key=key, state_key=state_key)
        pdu = federation_form(ev.pdu, V11)
        self.events.append(pdu)
        self.ids[name] = ev.event_id
        self.events_order = [*getattr(self, "events_order", []), name]
        return pdu


def make_room(join_rule: str = "public") -> Room:
    r = Room()
    r.add("create", "m.room.create", {"room_version": "11"}, [])
    r.add("alice", "m.room.member", {"membership": "join"}, ["create"], state_key=ALICE)
    r.add("pl", "m.room.power_levels", {"users": {ALICE: 100}}, ["create", "alice"])
    r.add("jr", "m.room.join_rules", {"join_rule": join_rule}, ["create", "alice", "pl"])
    return r


def bob_join(r: Room) -> dict[str, Any]:
    ev = build_event(V11, type="m.room.member", sender=BOB, room_id=ROOM, content={"membership": "join"},
                     prev_events=[r.ids[r.events_order[-1]]],
                     auth_events=[r.ids["create"], r.ids["pl"], r.ids["jr"]], depth=r.depth + 1,
                     origin_server_ts=r.now, server_name="us.test", signing_key=US, state_key=BOB)
    return federation_form(ev.pdu, V11)


@pytest.fixture
async def performer():
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=":memory:"), "federationapi", MIGRATIONS)
    store = FederationStore(db)
    keyring = KeyRing(store, OwnKeys("us.test", [US]), [])
    body = build_server_keys("res.test", [RES], int(time.time() * 1000) + 3600_000)
    await keyring.store_response(body, verify_server_keys(body, "res.test"))
    try:
        yield MembershipPerformer("us.test", US, client=None, keyring=keyring, roomserver=None)  # type: ignore[arg-type]
    finally:
        await db.close()


def answer(r: Room, state: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"origin": "res.test", "state": r.events if state is None else state, "auth_chain": r.events[:3]}


async def test_a_good_answer_passes_whole(performer):
    r = make_room()
    state, chain = await performer.verify_send_join(V11, ROOM, bob_join(r), answer(r))
    assert len(state) == 4 and len(chain) == 3


async def test_bad_events_are_dropped_or_redacted(performer):
    r = make_room()
    name = r.add("name", "m.room.name", {"name": "Lobby"}, ["create", "alice", "pl"])
    forged = dict(r.add("topic", "m.room.topic", {"topic": "x"}, ["create", "alice", "pl"]))
    forged["signatures"] = {"res.test": {RES.key_id: "A" * 86}}
    # An event by someone who is not in the room fails auth; one whose content changed is redacted.
    intruder = r.add("eve", "m.room.avatar", {"url": "mxc://x/y"}, ["create", "pl"], sender="@eve:res.test")
    changed = {**name, "content": {"name": "Changed"}}
    states = [e for e in r.events if e not in (name, r.events[-2], intruder)] + [forged, intruder, changed]
    state, _ = await performer.verify_send_join(V11, ROOM, bob_join(r), answer(r, states))
    types = {e["type"]: e for e in state}
    assert "m.room.topic" not in types       # bad signature: dropped
    assert "m.room.avatar" not in types      # fails auth: dropped
    assert types["m.room.name"]["content"] == {}  # bad content hash: kept redacted


async def test_broken_answers_are_refused(performer):
    r = make_room()
    join = bob_join(r)
    with pytest.raises(MatrixError) as ei:  # no create event
        await performer.verify_send_join(V11, ROOM, join, answer(r, r.events[1:]))
    assert ei.value.status == 502
    with pytest.raises(MatrixError):  # events of another room
        other = make_room()
        await performer.verify_send_join(V11, "!other:res.test", join, answer(other))
    with pytest.raises(MatrixError):  # not a list
        await performer.verify_send_join(V11, ROOM, join, {"state": {}, "auth_chain": []})
    with pytest.raises(MatrixError) as ei:  # the room's version is not the one announced
        await performer.verify_send_join(get_room_version("10"), ROOM, join, answer(r))
    # The given state does not allow our join (invite-only room).
    r2 = make_room("invite")
    with pytest.raises(MatrixError) as ei:
        await performer.verify_send_join(V11, ROOM, bob_join(r2), answer(r2))
    assert (ei.value.status, ei.value.errcode) == (403, "M_FORBIDDEN")
    # Our own join, changed on the way: refused.
    bad = {**join, "content": {"membership": "leave"}}
    with pytest.raises(MatrixError):
        await performer.verify_send_join(V11, ROOM, bad, answer(r))


def test_stripped_state_keeps_the_recommended_types():
    r = make_room()
    r.add("name", "m.room.name", {"name": "N"}, ["create", "alice", "pl"])
    out = stripped_state(r.events)
    assert {e["type"] for e in out} == {"m.room.create", "m.room.join_rules", "m.room.name"}
    assert all(set(e) == {"type", "state_key", "content", "sender"} for e in out)
