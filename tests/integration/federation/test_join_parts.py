"""Joining a remote room whose state does not fit one input record: the roomserver's
join_remote_room sends the state in parts (the log refuses records over 1 MiB) that the
room's worker gathers. Here the part budget is made tiny so a small room needs many."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from services.roomserver.internal import split_join_parts

from .conftest import wait_for

def test_split_join_parts_keeps_every_event_in_order() -> None:
    state = [{"n": i, "pad": "x" * 100} for i in range(50)]
    auth = [{"a": i} for i in range(5)]
    parts = split_join_parts(state, auth, 1000)
    assert len(parts) > 5
    assert [e for st, _ in parts for e in st] == state
    assert [e for _, ac in parts for e in ac] == auth
    assert all(st or ac for st, ac in parts)
    assert split_join_parts([], [], 1000) == [([], [])]
    # An event larger than the budget gets a part of its own.
    big = [{"pad": "y" * 5000}, {"n": 1}]
    assert [len(st) for st, _ in split_join_parts(big, [], 1000)] == [1, 1]


@pytest.mark.asyncio(loop_scope="package")
async def test_join_in_many_parts(shared_servers, monkeypatch):
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    room_id = await hs1.create_room(alice, preset="public_chat", name="Parts")
    # Some members so the state is more than a handful of events.
    for i in range(6):
        u = await hs1.register(f"m{i}")
        await hs1.matrix.request(u, "POST", f"/join/{quote(room_id, safe='')}", json={})
    monkeypatch.setattr(type(hs2.roomserver), "join_part_bytes", 1500)
    kinds: list[tuple[str, int | None]] = []
    real_request = hs2.roomserver._request

    async def counting(room: str, kind: str, body: dict) -> dict:
        kinds.append((kind, body.get("part")))
        return await real_request(room, kind, body)

    monkeypatch.setattr(hs2.roomserver, "_request", counting)
    bob = await hs2.register("bob")
    r = await hs2.matrix.request(bob, "POST", f"/join/{quote(room_id, safe='')}?server_name={quote(hs1.name)}",
                                 json={})
    assert r["room_id"] == room_id
    parts = [p for k, p in kinds if k == "join_remote_room"]
    assert len(parts) > 3 and parts == list(range(len(parts)))
    members = await hs2.roomserver.get_joined_members(room_id)
    assert bob.user_id in members and alice.user_id in members and len(members) == 8
    name = await hs2.roomserver.get_state_event(room_id, "m.room.name", "")
    assert name is not None and name["content"]["name"] == "Parts"

    async def bob_joined_on_hs1() -> bool:
        m = await hs1.roomserver.get_membership(room_id, bob.user_id)
        return m is not None and m.membership == "join"

    await wait_for(bob_joined_on_hs1, what="hs1 seeing bob's join")


@pytest.mark.asyncio(loop_scope="package")
async def test_join_of_a_room_with_too_much_state_is_refused(shared_servers, monkeypatch):
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    room_id = await hs1.create_room(alice, preset="public_chat")
    monkeypatch.setattr(type(hs2.roomserver), "max_join_state_events", 3)
    bob = await hs2.register("bob")
    r = await hs2.matrix.request(bob, "POST", f"/join/{quote(room_id, safe='')}?server_name={quote(hs1.name)}",
                                 json={}, expect=413)
    assert r["errcode"] == "M_TOO_LARGE"
    assert await hs2.roomserver.get_joined_members(room_id) == []
    # The roomserver still works: a room of hs2's own.
    own = await hs2.create_room(bob)
    await hs2.matrix.send(bob, own, "still fine")
