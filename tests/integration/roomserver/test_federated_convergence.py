"""Convergence: two servers' branches of state events and messages, delivered in
different orders to identical copies of a room, end in the same current state and
forward extremities (current state = resolution over the extremities' states, never
dependent on arrival order), and what the database holds matches the in-memory view.
Fixed seeds in CI; AXON_LONG_FUZZ=1 runs many more."""
from __future__ import annotations

import os
import random
from typing import Any

import pytest

from libs.config import DatabaseConfig
from libs.events.auth import auth_types_for_event
from libs.events.builder import build_event
from libs.events.event import Event
from libs.events.room_versions import RoomVersion, get_room_version
from libs.events.signing import SigningKey
from libs.storage import Database, open_database

from services.roomserver.api import NewEventRequest
from services.roomserver.input import RoomInputProcessor
from services.roomserver.storage.store import MIGRATIONS_PACKAGE, RoomserverStore

from .fedhelpers import OTHER, OTHER_KEY, REMOTE, REMOTE_KEY, FakeRemote, make_room, receive

ROOM_V10 = "!conv:test.local"
ALICE = "@alice:test.local"
BOB = f"@bob:{REMOTE}"
CAROL = f"@carol:{OTHER}"
SEEDS = list(range(40)) if os.environ.get("AXON_LONG_FUZZ") else [1, 2, 3]


async def fresh(tmp_path: Any, name: str) -> tuple[Database, RoomInputProcessor]:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path / name)), "roomserver",
                             MIGRATIONS_PACKAGE)
    # A fixed clock: every copy builds the same local events (same IDs).
    proc = RoomInputProcessor(RoomserverStore(db), "test.local", SigningKey.from_seed(bytes(32), "t"),
                              clock=lambda: 1_700_000_000_000)
    return db, proc


def branch(rng: random.Random, rv: RoomVersion, room_id: str, sender: str, server: str, key: SigningKey,
           base: dict[tuple[str, str], str], tip: str, depth: int, n: int, ts0: int) -> list[Event]:
    """A linear run of `n` events by `sender` on top of `tip`, each authorised by the
    branch's own state so far."""
    state = dict(base)
    out: list[Event] = []
    for i in range(n):
        kind = rng.choice(["msg", "topic", "name", "x", "x", "member"])
        sk: str | None = ""
        if kind == "msg":
            etype, content, sk = "m.room.message", {"body": f"{sender} {i}"}, None
        elif kind == "topic":
            etype, content = "m.room.topic", {"topic": f"{sender} {i}"}
        elif kind == "name":
            etype, content = "m.room.name", {"name": f"{sender} {i}"}
        elif kind == "x":
            etype, content, sk = "x.test", {"v": f"{sender} {i}"}, rng.choice(["a", "b", "c"])
        else:
            etype, content, sk = "m.room.member", {"membership": "join", "displayname": f"n{i}"}, sender
        keys = auth_types_for_event(rv, etype, sender, sk, content)
        ev = build_event(rv, type=etype, sender=sender, room_id=room_id, content=content, prev_events=[tip],
                         auth_events=[state[k] for k in sorted(keys) if k in state], depth=depth + i + 1,
                         origin_server_ts=ts0 + rng.randrange(0, 5000), server_name=server, signing_key=key,
                         state_key=sk)
        if sk is not None:
            state[(etype, sk)] = ev.event_id
        tip = ev.event_id
        out.append(ev)
    return out


@pytest.mark.parametrize("version", ["10", "12"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_branches_converge_whatever_the_order(tmp_path: Any, seed: int, version: str) -> None:
    rng = random.Random(seed)
    rv = get_room_version(version)
    copies = [await fresh(tmp_path, f"c{i}") for i in range(3)]
    create_pdu: dict[str, Any] | None = None
    ROOM = ROOM_V10
    if rv.hydra:  # v12: the room ID is the create event's hash, built once for every copy
        create = build_event(rv, type="m.room.create", sender=ALICE, room_id=None,
                             content={"room_version": "12"}, prev_events=[], auth_events=[], depth=1,
                             origin_server_ts=1_700_000_000_000, server_name="test.local",
                             signing_key=SigningKey.from_seed(bytes(32), "t"), state_key="")
        create_pdu, ROOM = create.pdu, create.room_id
    try:
        # The same room in every copy: bob and carol joined, both may send state.
        joins: list[Event] = []
        for _db, proc in copies:
            await make_room(proc, ROOM, version=version, create_pdu=create_pdu)
            if not joins:
                joins.append(await FakeRemote(proc, ROOM, version=version).join(BOB))
            assert (await receive(proc, REMOTE, ROOM, joins[0]))["results"] == {joins[0].event_id: None}
            if len(joins) == 1:
                joins.append(await FakeRemote(proc, ROOM, version=version, server=OTHER, key=OTHER_KEY).join(CAROL))
            assert (await receive(proc, OTHER, ROOM, joins[1]))["results"] == {joins[1].event_id: None}
            await proc.send(NewEventRequest(room_id=ROOM, type="m.room.power_levels", sender=ALICE, state_key="",
                                            content={"users": {**({} if rv.hydra else {ALICE: 100}),
                                                               BOB: 50, CAROL: 50},
                                                     "state_default": 50}))
        rooms = [await proc.room(ROOM) for _db, proc in copies]
        assert all(r.state == rooms[0].state and r.extremities.keys() == rooms[0].extremities.keys()
                   for r in rooms)
        base = {k: v[0] for k, v in rooms[0].state.items()}
        (tip, (_nid, depth)), = rooms[0].extremities.items()
        xs = branch(rng, rv, ROOM, BOB, REMOTE, REMOTE_KEY, base, tip, depth, rng.randrange(3, 9), 1_800_000_000_000)
        ys = branch(rng, rv, ROOM, CAROL, OTHER, OTHER_KEY, base, tip, depth, rng.randrange(3, 9), 1_800_000_000_000)
        inter = list(xs), list(ys)
        mixed: list[Event] = []
        while inter[0] or inter[1]:
            side = inter[rng.randrange(2)] if inter[0] and inter[1] else (inter[0] or inter[1])
            mixed.append(side.pop(0))
        for (_db, proc), order in zip(copies, (xs + ys, ys + xs, mixed)):
            for ev in order:
                origin = REMOTE if ev.sender == BOB else OTHER
                res = await receive(proc, origin, ROOM, ev)
                assert res == {"results": {ev.event_id: None}, "soft_failed": []}, res
        final = [await proc.room(ROOM) for _db, proc in copies]
        assert {k: v[0] for k, v in final[1].state.items()} == {k: v[0] for k, v in final[0].state.items()}
        assert {k: v[0] for k, v in final[2].state.items()} == {k: v[0] for k, v in final[0].state.items()}
        assert set(final[0].extremities) == {xs[-1].event_id, ys[-1].event_id}
        for (_db, proc), room in zip(copies, final):
            assert set(room.extremities) == set(final[0].extremities)
            # The database agrees with the in-memory view (a fresh load).
            fresh_proc = RoomInputProcessor(proc.store, "test.local", proc.signing_key)
            loaded = await fresh_proc.room(ROOM)
            assert {k: v[0] for k, v in loaded.state.items()} == {k: v[0] for k, v in room.state.items()}
            assert set(loaded.extremities) == set(room.extremities)
            rows = await proc.store.current_state_rows(ROOM)
            assert sorted(r.event_id for r in rows) == sorted(v[0] for v in room.state.values())
            members = {u for u in (await proc.store.joined_members(ROOM))}
            assert members == {ALICE, BOB, CAROL}
        # Bob merges both branches (a state event with two prevs): accepted everywhere, same state.
        merged_state = {k: v[0] for k, v in final[0].state.items()}
        keys = auth_types_for_event(rv, "m.room.topic", BOB, "", {"topic": "merge"})
        merge = build_event(rv, type="m.room.topic", sender=BOB, room_id=ROOM, content={"topic": "merge"},
                            prev_events=[xs[-1].event_id, ys[-1].event_id],
                            auth_events=[merged_state[k] for k in sorted(keys) if k in merged_state],
                            depth=max(xs[-1].depth, ys[-1].depth) + 1, origin_server_ts=1_900_000_000_000,
                            server_name=REMOTE, signing_key=REMOTE_KEY, state_key="")
        for _db, proc in copies:
            assert (await receive(proc, REMOTE, ROOM, merge))["results"] == {merge.event_id: None}
            room = await proc.room(ROOM)
            assert list(room.extremities) == [merge.event_id]
            assert {k: v[0] for k, v in room.state.items()} == {**merged_state, ("m.room.topic", ""): merge.event_id}
        # A local message on top, in every copy.
        for _db, proc in copies:
            eid = await proc.send(NewEventRequest(room_id=ROOM, type="m.room.message", sender=ALICE,
                                                  content={"body": "merged"}))
            ev = await proc._event(eid)
            assert ev.prev_event_ids == [merge.event_id]
    finally:
        for db, _proc in copies:
            await db.close()
