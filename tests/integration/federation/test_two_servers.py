"""Axon <-> Axon over loopback TLS: joins (by room ID and by alias), messages and state
both ways, invites of remote users, leaves, knocks and bans. Every wait is a /sync
long-poll or a poll with a deadline."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from services.roomserver.internal import RoomserverInternal
from tests.integration.conftest import User

from .conftest import FedServer, wait_for


# The roomserver's federated input (the contract's join_remote_room & co.) lands separately.
pytestmark = [pytest.mark.skipif(not hasattr(RoomserverInternal, "join_remote_room"),
                                 reason="the roomserver has no federated input yet"),
              pytest.mark.asyncio(loop_scope="package")]


def timeline_bodies(resp: dict[str, Any], room_id: str) -> list[str]:
    room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e.get("content", {}).get("body") for e in room.get("timeline", {}).get("events", [])
            if e.get("type") == "m.room.message"]


def joined_events(resp: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return room.get("state", {}).get("events", []) + room.get("timeline", {}).get("events", [])


def has_member(resp: dict[str, Any], room_id: str, user_id: str, membership: str) -> bool:
    return any(e.get("type") == "m.room.member" and e.get("state_key") == user_id
               and e.get("content", {}).get("membership") == membership for e in joined_events(resp, room_id))


async def sync_seen(srv: FedServer, user: User, pred, deadline_s: float = 30.0) -> list[dict[str, Any]]:
    """Sync from the start until `pred(all responses so far)` holds."""
    seen: list[dict[str, Any]] = []

    def check(resp: dict[str, Any]) -> bool:
        seen.append(resp)
        return pred(seen)

    await srv.sync_until(user, check, deadline_s=deadline_s)
    return seen


async def join_remote(srv: FedServer, user: User, room: str, via: str | None = None) -> str:
    q = f"?server_name={quote(via, safe='')}" if via else ""
    r = await srv.matrix.request(user, "POST", f"/join/{quote(room, safe='')}{q}", json={})
    return r["room_id"]


async def public_room(hs1: FedServer, alice: User, **body: Any) -> str:
    return await hs1.create_room(alice, preset="public_chat", name="Lobby", **body)


async def test_join_by_room_id_and_messages_both_ways(shared_servers):
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await public_room(hs1, alice)
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id

    # Bob's server now holds the room, with the state it was given.
    assert await hs2.roomserver.get_room_version(room_id) == "11"
    name = await hs2.roomserver.get_state_event(room_id, "m.room.name", "")
    assert name is not None and name["content"]["name"] == "Lobby"
    # Alice's server accepted the join: Bob is a member there.
    m = await hs1.roomserver.get_membership(room_id, bob.user_id)
    assert m is not None and m.membership == "join"
    # Bob's /sync shows the room with its state.
    await hs2.sync_until(bob, lambda r: any(
        e.get("type") == "m.room.name" and e.get("content", {}).get("name") == "Lobby"
        for e in joined_events(r, room_id)))

    # Messages both ways.
    await hs1.matrix.send(alice, room_id, "hello from hs1")
    await sync_seen(hs2, bob, lambda rs: any("hello from hs1" in timeline_bodies(r, room_id) for r in rs))
    await hs2.matrix.send(bob, room_id, "hello from hs2")
    await sync_seen(hs1, alice, lambda rs: any("hello from hs2" in timeline_bodies(r, room_id) for r in rs))
    # And both users see both messages.
    await sync_seen(hs2, bob, lambda rs: any("hello from hs2" in timeline_bodies(r, room_id) for r in rs))

    # A state change on one side is visible on the other.
    await hs1.matrix.request(alice, "PUT", f"/rooms/{room_id}/state/m.room.topic", json={"topic": "federated"})

    async def topic_on_hs2() -> bool:
        ev = await hs2.roomserver.get_state_event(room_id, "m.room.topic", "")
        return ev is not None and ev["content"].get("topic") == "federated"

    await wait_for(topic_on_hs2, what="the topic reaching hs2")
    state = await hs2.matrix.request(bob, "GET", f"/rooms/{room_id}/state/m.room.topic")
    assert state == {"topic": "federated"}


async def test_join_by_alias(shared_servers):
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await public_room(hs1, alice, room_alias_name="lobby")
    alias = f"#lobby:{hs1.name}"
    assert await join_remote(hs2, bob, alias) == room_id
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, bob.user_id, "join") for r in rs))
    # hs2 is in the room now: a second user's join is an ordinary local event, sent over /send.
    carol = await hs2.register("carol")
    assert await join_remote(hs2, carol, alias) == room_id
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, carol.user_id, "join") for r in rs))
    # An unknown remote alias is a 404.
    r = await hs2.http.post(f"/_matrix/client/v3/join/{quote('#nope:' + hs1.name, safe='')}", json={},
                            headers=bob.headers)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


async def test_invite_of_a_remote_user_then_accept(shared_servers):
    hs1, hs2 = shared_servers
    alice, carol = await hs1.register("alice"), await hs2.register("carol")
    room_id = await hs1.create_room(alice, preset="private_chat", name="Secret")
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": carol.user_id})
    # Alice's server holds the invite (signed by both servers) in the room.
    m = await hs1.roomserver.get_membership(room_id, carol.user_id)
    assert m is not None and m.membership == "invite"
    invite = await hs1.roomserver.get_event(m.event_id)
    assert set(invite["signatures"]) == {hs1.name, hs2.name}

    # Carol sees the invite in /sync, with the stripped state.
    resp = await hs2.sync_until(carol, lambda r: room_id in r.get("rooms", {}).get("invite", {}))
    invite_state = resp["rooms"]["invite"][room_id]["invite_state"]["events"]
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Secret" for e in invite_state)
    assert any(e["type"] == "m.room.member" and e["state_key"] == carol.user_id
               and e["content"]["membership"] == "invite" for e in invite_state)

    # She accepts: a remote join through the inviter's server.
    await hs2.matrix.request(carol, "POST", f"/rooms/{quote(room_id, safe='')}/join", json={})
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, carol.user_id, "join") for r in rs))
    await hs2.sync_until(carol, lambda r: room_id in r.get("rooms", {}).get("join", {}))
    await hs1.matrix.send(alice, room_id, "welcome carol")
    await sync_seen(hs2, carol, lambda rs: any("welcome carol" in timeline_bodies(r, room_id) for r in rs))


async def test_remote_user_leaves_then_is_banned(shared_servers):
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await public_room(hs1, alice)
    await join_remote(hs2, bob, room_id, via=hs1.name)
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, bob.user_id, "join") for r in rs))

    # Bob leaves: a local event of his server, sent to Alice's.
    since = (await hs2.matrix.sync(bob))["next_batch"]
    await hs2.matrix.request(bob, "POST", f"/rooms/{room_id}/leave", json={})
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, bob.user_id, "leave") for r in rs))
    await hs2.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("leave", {}), since=since)

    # He comes back, and Alice bans him: his server hears of it.
    await join_remote(hs2, bob, room_id, via=hs1.name)
    m = await hs1.roomserver.get_membership(room_id, bob.user_id)
    assert m is not None and m.membership == "join"
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/ban", json={"user_id": bob.user_id, "reason": "spam"})

    async def banned_on_hs2() -> bool:
        m = await hs2.roomserver.get_membership(room_id, bob.user_id)
        return m is not None and m.membership == "ban"

    await wait_for(banned_on_hs2, what="the ban reaching hs2")
    # Banned: a new join is refused by Alice's server.
    r = await hs2.http.post(f"/_matrix/client/v3/join/{quote(room_id, safe='')}?server_name={hs1.name}",
                            json={}, headers=bob.headers)
    assert r.status_code == 403, r.text


async def test_knock_on_a_remote_room(shared_servers):
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await hs1.create_room(alice, name="Knock knock",
                                    initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                                    "content": {"join_rule": "knock"}}])
    since = (await hs2.matrix.sync(bob))["next_batch"]
    await hs2.matrix.request(bob, "POST", f"/knock/{quote(room_id, safe='')}?server_name={hs1.name}",
                             json={"reason": "let me in"})
    # Bob's own /sync shows the knock, with the room's stripped state.
    resp = await hs2.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("knock", {}), since=since)
    knock_state = resp["rooms"]["knock"][room_id]["knock_state"]["events"]
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Knock knock" for e in knock_state)
    m = await hs1.roomserver.get_membership(room_id, bob.user_id)
    assert m is not None and m.membership == "knock"
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, bob.user_id, "knock") for r in rs))
    # Another knocker changes their mind: the knock is withdrawn through make_leave/send_leave.
    gina = await hs2.register("gina")
    await hs2.matrix.request(gina, "POST", f"/knock/{quote(room_id, safe='')}?via={hs1.name}", json={})
    await hs2.matrix.request(gina, "POST", f"/rooms/{quote(room_id, safe='')}/leave", json={})
    m = await hs1.roomserver.get_membership(room_id, gina.user_id)
    assert m is not None and m.membership == "leave"
    # Alice lets him in with an invite; he joins.
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": bob.user_id})
    await hs2.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("invite", {}))
    await hs2.matrix.request(bob, "POST", f"/rooms/{quote(room_id, safe='')}/join", json={})
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, bob.user_id, "join") for r in rs))


async def test_reject_a_remote_invite(shared_servers):
    hs1, hs2 = shared_servers
    alice, carol = await hs1.register("alice"), await hs2.register("carol")
    room_id = await hs1.create_room(alice, preset="private_chat", name="Nope")
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": carol.user_id})
    resp = await hs2.sync_until(carol, lambda r: room_id in r.get("rooms", {}).get("invite", {}))
    # Carol's server is not in the room: the rejection goes through make_leave/send_leave.
    await hs2.matrix.request(carol, "POST", f"/rooms/{quote(room_id, safe='')}/leave", json={})
    m = await hs1.roomserver.get_membership(room_id, carol.user_id)
    assert m is not None and m.membership == "leave"
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, carol.user_id, "leave") for r in rs))
    # Carol's own /sync moves the room out of `invite`.
    await hs2.sync_until(carol, lambda r: room_id in r.get("rooms", {}).get("leave", {}), since=resp["next_batch"])


async def test_invite_builds_on_the_latest_events(shared_servers):
    hs1, hs2 = shared_servers
    alice, dave = await hs1.register("alice"), await hs2.register("dave")
    room_id = await hs1.create_room(alice, preset="private_chat")
    last = ""
    for i in range(3):
        last = await hs1.matrix.send(alice, room_id, f"before the invite {i}")
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": dave.user_id})
    m = await hs1.roomserver.get_membership(room_id, dave.user_id)
    invite = await hs1.roomserver.get_event(m.event_id)
    assert invite["prev_events"] == [last]  # no fork: it follows the latest message
    await hs2.sync_until(dave, lambda r: room_id in r.get("rooms", {}).get("invite", {}))


@pytest.mark.parametrize("version", ["1", "12"])
async def test_join_rooms_of_other_versions(shared_servers, version):
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await hs1.create_room(alice, preset="public_chat", room_version=version)
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id
    assert await hs2.roomserver.get_room_version(room_id) == version
    await hs2.matrix.send(bob, room_id, f"hello v{version}")
    await sync_seen(hs1, alice, lambda rs: any(f"hello v{version}" in timeline_bodies(r, room_id) for r in rs))


async def test_restricted_join_authorised_by_the_resident_server(shared_servers):
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    space = await public_room(hs1, alice)
    room_id = await hs1.create_room(alice, room_version="10", initial_state=[{
        "type": "m.room.join_rules", "state_key": "",
        "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}])
    # Not a member of the space yet: refused.
    r = await hs2.http.post(f"/_matrix/client/v3/join/{quote(room_id, safe='')}?server_name={hs1.name}",
                            json={}, headers=bob.headers)
    assert r.status_code in (400, 403), r.text
    assert r.json()["errcode"] in ("M_FORBIDDEN", "M_UNABLE_TO_AUTHORISE_JOIN")
    await join_remote(hs2, bob, space, via=hs1.name)
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id
    m = await hs1.roomserver.get_membership(room_id, bob.user_id)
    join = await hs1.roomserver.get_event(m.event_id)
    assert join["content"]["join_authorised_via_users_server"] == alice.user_id
    assert set(join["signatures"]) == {hs1.name, hs2.name}


async def test_invite_into_a_room_the_invitees_server_is_in(shared_servers):
    hs1, hs2 = shared_servers
    alice, bob, carol = await hs1.register("alice"), await hs2.register("bob"), await hs2.register("carol")
    room_id = await public_room(hs1, alice)
    await join_remote(hs2, bob, room_id, via=hs1.name)
    since = (await hs2.matrix.sync(carol))["next_batch"]
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": carol.user_id})
    await hs2.sync_until(carol, lambda r: room_id in r.get("rooms", {}).get("invite", {}), since=since)
    # Bob, on the same server, sees the invite as a room event.
    await sync_seen(hs2, bob, lambda rs: any(has_member(r, room_id, carol.user_id, "invite") for r in rs))
    await hs2.matrix.request(carol, "POST", f"/rooms/{quote(room_id, safe='')}/join", json={})
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, carol.user_id, "join") for r in rs))


async def test_local_knock_and_refusals(shared_servers):
    hs1, _ = shared_servers
    alice, dave = await hs1.register("alice"), await hs1.register("dave")
    room_id = await hs1.create_room(alice, initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                                           "content": {"join_rule": "knock"}}])
    await hs1.matrix.request(dave, "POST", f"/knock/{quote(room_id, safe='')}", json={"reason": "hi"})
    m = await hs1.roomserver.get_membership(room_id, dave.user_id)
    assert m is not None and m.membership == "knock"
    # A public room cannot be knocked on; a member cannot knock.
    public = await public_room(hs1, alice)
    r = await hs1.http.post(f"/_matrix/client/v3/knock/{quote(public, safe='')}", json={}, headers=dave.headers)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
    r = await hs1.http.post(f"/_matrix/client/v3/knock/{quote(public, safe='')}", json={}, headers=alice.headers)
    assert r.status_code == 403, r.text
    r = await hs1.http.post(f"/_matrix/client/v3/knock/{quote('!nope:' + hs1.name, safe='')}", json={},
                            headers=dave.headers)
    assert r.status_code == 404, r.text


async def test_create_room_inviting_a_remote_user(shared_servers):
    hs1, hs2 = shared_servers
    alice, erin = await hs1.register("alice"), await hs2.register("erin")
    since = (await hs2.matrix.sync(erin))["next_batch"]
    room_id = await hs1.create_room(alice, preset="trusted_private_chat", is_direct=True, invite=[erin.user_id],
                                    name="DM")
    resp = await hs2.sync_until(erin, lambda r: room_id in r.get("rooms", {}).get("invite", {}), since=since)
    invite_state = resp["rooms"]["invite"][room_id]["invite_state"]["events"]
    me = [e for e in invite_state if e["type"] == "m.room.member" and e["state_key"] == erin.user_id]
    assert me and me[0]["content"].get("is_direct") is True
    await hs2.matrix.request(erin, "POST", f"/rooms/{quote(room_id, safe='')}/join", json={})
    await sync_seen(hs1, alice, lambda rs: any(has_member(r, room_id, erin.user_id, "join") for r in rs))


async def test_rejecting_an_invite_when_the_room_is_unreachable(shared_servers, monkeypatch):
    hs1, hs2 = shared_servers
    alice, frank = await hs1.register("alice"), await hs2.register("frank")
    room_id = await hs1.create_room(alice, preset="private_chat")
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": frank.user_id})
    resp = await hs2.sync_until(frank, lambda r: room_id in r.get("rooms", {}).get("invite", {}))

    async def unreachable(*a, **k):
        from libs.errors import MatrixError
        raise MatrixError(502, "M_UNKNOWN", "unreachable")

    monkeypatch.setattr(hs2.federation.api.performer, "_make", unreachable)
    await hs2.matrix.request(frank, "POST", f"/rooms/{quote(room_id, safe='')}/leave", json={})
    # Rejected here at least: out of `invite`, into `leave`; the inviting server never heard.
    await hs2.sync_until(frank, lambda r: room_id in r.get("rooms", {}).get("leave", {}), since=resp["next_batch"])
    m = await hs1.roomserver.get_membership(room_id, frank.user_id)
    assert m is not None and m.membership == "invite"


async def test_messages_reach_the_other_server_promptly(shared_servers):
    """Back-to-back sends: none waits for the outbound queue's 5 s scanner (an enqueue that
    raced the destination worker's exit used to)."""
    import asyncio
    import time

    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await public_room(hs1, alice)
    await join_remote(hs2, bob, room_id, via=hs1.name)
    worst = 0.0
    for i in range(30):
        t = time.monotonic()
        eid = await hs1.matrix.send(alice, room_id, f"quick {i}")
        # Poll tightly: the next send then starts while the queue's worker is going idle.
        while await hs2.roomserver.get_event(eid) is None:
            assert time.monotonic() - t < 10, f"message {i} not on hs2"
            await asyncio.sleep(0.005)
        worst = max(worst, time.monotonic() - t)
    assert worst < 3.5, worst
