"""SyTest 50federation regressions over the two-server harness (hs2 plays the remote)."""
from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from libs.events.builder import build_event
from libs.events.room_versions import get_room_version

pytestmark = pytest.mark.asyncio(loop_scope="package")

V1 = get_room_version("1")


async def test_inbound_v1_invite(shared_servers):
    # 35room-invite.pl "Inbound federation can receive invites via v1 API": the body is the
    # event (stripped state in unsigned), no room version (a v1 room), answer [200, {event}].
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    key = hs2.federation.api.signing_keys[0]
    room_id = f"!v1room{int(time.time() * 1000)}:{hs2.name}"
    ev = build_event(V1, type="m.room.member", sender=f"@creator:{hs2.name}", room_id=room_id,
                     content={"membership": "invite"}, prev_events=["$1:" + hs2.name],
                     auth_events=["$0:" + hs2.name], depth=3, origin_server_ts=int(time.time() * 1000),
                     server_name=hs2.name, signing_key=key, state_key=alice.user_id,
                     event_id=f"$inv{int(time.time() * 1000)}:{hs2.name}",
                     unsigned={"invite_room_state": [{"type": "m.room.name", "state_key": "",
                                                      "sender": f"@creator:{hs2.name}",
                                                      "content": {"name": "Old times"}}]})
    pdu = dict(ev.pdu)
    answer = await hs2.federation.client.put_json(
        hs1.name, f"/_matrix/federation/v1/invite/{quote(room_id, safe='')}/{quote(ev.event_id, safe='')}", pdu)
    assert isinstance(answer, list) and answer[0] == 200, answer
    assert set(answer[1]["event"]["signatures"]) == {hs1.name, hs2.name}
    sync = await hs1.sync_until(alice, lambda r: room_id in r.get("rooms", {}).get("invite", {}))
    names = [e for e in sync["rooms"]["invite"][room_id]["invite_state"]["events"] if e["type"] == "m.room.name"]
    assert names and names[0]["content"]["name"] == "Old times"


async def test_client_directory_lookup_of_a_remote_alias(shared_servers):
    # 11query-directory.pl "Outbound federation can query room alias directory".
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    room_id = await hs1.create_room(alice, preset="public_chat")
    alias = f"#dir{int(time.time() * 1000)}:{hs1.name}"
    await hs1.matrix.request(alice, "PUT", f"/directory/room/{quote(alias)}", json={"room_id": room_id})
    bob = await hs2.register("bob")
    got = await hs2.matrix.request(bob, "GET", f"/directory/room/{quote(alias)}")
    assert got["room_id"] == room_id and hs1.name in got["servers"]
    await hs2.matrix.request(bob, "GET", f"/directory/room/{quote('#nope:' + hs1.name)}", expect=404)


async def test_rejecting_an_invite_the_room_refuses_is_local(shared_servers, monkeypatch):
    # 35room-invite.pl "Inbound federation can receive invite and reject when remote replies
    # with a 403": the rejection succeeds here all the same.
    hs1, hs2 = shared_servers
    alice, frank = await hs1.register("alice"), await hs2.register("frank")
    room_id = await hs1.create_room(alice, preset="private_chat")
    await hs1.matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": frank.user_id})
    resp = await hs2.sync_until(frank, lambda r: room_id in r.get("rooms", {}).get("invite", {}))

    async def refusing(*a, **k):
        from libs.errors import MatrixError
        raise MatrixError(403, "M_FORBIDDEN", "go away")

    monkeypatch.setattr(hs2.federation.api.performer, "_make", refusing)
    await hs2.matrix.request(frank, "POST", f"/rooms/{quote(room_id, safe='')}/leave", json={})
    await hs2.sync_until(frank, lambda r: room_id in r.get("rooms", {}).get("leave", {}), since=resp["next_batch"])


async def test_client_profile_of_a_remote_user(shared_servers):
    # 10query-profile.pl "Outbound federation can query profile data".
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    await hs1.matrix.request(alice, "PUT", f"/profile/{quote(alice.user_id)}/displayname",
                             json={"displayname": "Alice Far"})
    bob = await hs2.register("bob")
    got = await hs2.matrix.request(bob, "GET", f"/profile/{quote(alice.user_id)}/displayname")
    assert got == {"displayname": "Alice Far"}
    whole = await hs2.matrix.request(bob, "GET", f"/profile/{quote(alice.user_id)}")
    assert whole["displayname"] == "Alice Far"
    await hs2.matrix.request(bob, "GET", f"/profile/{quote('@nobody:' + hs1.name)}", expect=404)


async def test_client_keys_query_and_claim_of_remote_users(shared_servers):
    # 41end-to-end-keys/04-query-key-federation.pl "Can query remote device keys using POST",
    # 05-one-time-key-federation.pl "Can claim remote one time key using POST".
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    dk = {"user_id": alice.user_id, "device_id": alice.device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
          "keys": {f"ed25519:{alice.device_id}": "abc"}, "signatures": {}}
    await hs1.matrix.request(alice, "POST", "/keys/upload", json={
        "device_keys": dk, "one_time_keys": {"signed_curve25519:AAAA": {"key": "k1"}}})
    bob = await hs2.register("bob")
    q = await hs2.matrix.request(bob, "POST", "/keys/query", json={
        "device_keys": {alice.user_id: [], bob.user_id: [], "@x:unreachable.invalid": []}})
    assert q["device_keys"][alice.user_id][alice.device_id]["keys"] == dk["keys"]
    assert bob.user_id in q["device_keys"] and "unreachable.invalid" in q["failures"]
    assert hs1.name not in q["failures"]
    c = await hs2.matrix.request(bob, "POST", "/keys/claim", json={
        "one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
    assert list(c["one_time_keys"][alice.user_id][alice.device_id]) == ["signed_curve25519:AAAA"]


async def test_client_public_rooms_of_another_server(shared_servers):
    # 30rooms/70publicroomslist.pl "Can get remote public room list".
    hs1, hs2 = shared_servers
    alice = await hs1.register("alice")
    room_id = await hs1.create_room(alice, visibility="public", name="Far lobby")
    bob = await hs2.register("bob")
    got = await hs2.matrix.request(bob, "GET", f"/publicRooms?server={quote(hs1.name)}")
    assert any(r["room_id"] == room_id and r.get("name") == "Far lobby" for r in got["chunk"]), got
    # The local list does not have it; POST with ?server= and a limit pages the remote one.
    local = await hs2.matrix.request(bob, "GET", "/publicRooms")
    assert all(r["room_id"] != room_id for r in local["chunk"])
    page = await hs2.matrix.request(bob, "POST", f"/publicRooms?server={quote(hs1.name)}",
                                    json={"limit": 1, "filter": {"generic_search_term": "Far lobby"}})
    assert [r["room_id"] for r in page["chunk"]] == [room_id]
