"""End to end over the HTTP API of an embedded homeserver: rooms, messages, sync."""
from __future__ import annotations

import asyncio
import time


def _timeline(resp, room_id):
    return resp["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])


async def test_create_send_and_sync(matrix):
    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice, preset="public_chat", name="Lobby", room_alias_name="lobby")
    resp = await matrix.sync_until(alice, lambda r: len(_timeline(r, room_id)) >= 5)
    types = [e["type"] for e in _timeline(resp, room_id)]
    assert types[:2] == ["m.room.create", "m.room.member"]
    assert "m.room.name" in types and "m.room.join_rules" in types

    event_id = await matrix.send(alice, room_id, "hello")
    inc = await matrix.sync_until(alice, lambda r: any(e["event_id"] == event_id for e in _timeline(r, room_id)),
                                  since=resp["next_batch"])
    ev = next(e for e in _timeline(inc, room_id) if e["event_id"] == event_id)
    assert ev["content"]["body"] == "hello"
    assert ev["sender"] == alice.user_id
    assert "transaction_id" in ev["unsigned"]
    # Nothing is delivered twice: the next incremental sync has no timeline for the room.
    again = await matrix.sync(alice, since=inc["next_batch"])
    assert not _timeline(again, room_id)


async def test_second_user_joins_by_alias_and_sees_messages(matrix):
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")
    room_id = await matrix.create_room(alice, preset="public_chat", room_alias_name="chat")
    assert await matrix.join(bob, "#chat:test.local") == room_id
    eid = await matrix.send(alice, room_id, "welcome bob")
    resp = await matrix.sync_until(bob, lambda r: any(e["event_id"] == eid for e in _timeline(r, room_id)))
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id for e in
               _timeline(resp, room_id) + resp["rooms"]["join"][room_id]["state"]["events"])
    members = await matrix.request(bob, "GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {alice.user_id, bob.user_id}
    rooms = await matrix.request(bob, "GET", "/joined_rooms")
    assert rooms["joined_rooms"] == [room_id]


async def test_private_room_needs_invite(matrix):
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")
    room_id = await matrix.create_room(alice, preset="private_chat")
    r = await matrix.request(bob, "POST", f"/rooms/{room_id}/join", expect=403, json={})
    assert r["errcode"] == "M_FORBIDDEN"
    await matrix.request(alice, "POST", f"/rooms/{room_id}/invite", json={"user_id": bob.user_id})
    resp = await matrix.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("invite", {}))
    invite_state = resp["rooms"]["invite"][room_id]["invite_state"]["events"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id for e in invite_state)
    await matrix.request(bob, "POST", f"/rooms/{room_id}/join", json={})
    await matrix.send(bob, room_id, "thanks")


async def test_state_get_put_and_forbidden_power(matrix):
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")
    room_id = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room_id)
    await matrix.request(alice, "PUT", f"/rooms/{room_id}/state/m.room.topic", json={"topic": "news"})
    assert await matrix.request(bob, "GET", f"/rooms/{room_id}/state/m.room.topic") == {"topic": "news"}
    r = await matrix.request(bob, "PUT", f"/rooms/{room_id}/state/m.room.topic", expect=403, json={"topic": "x"})
    assert r["errcode"] == "M_FORBIDDEN"
    r = await matrix.request(bob, "GET", f"/rooms/{room_id}/state/m.room.nothing", expect=404)
    assert r["errcode"] == "M_NOT_FOUND"
    state = await matrix.request(bob, "GET", f"/rooms/{room_id}/state")
    assert {(e["type"], e["state_key"]) for e in state} >= {("m.room.create", ""), ("m.room.topic", "")}


async def test_txn_idempotency(matrix):
    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice)
    body = {"msgtype": "m.text", "body": "once"}
    a = await matrix.request(alice, "PUT", f"/rooms/{room_id}/send/m.room.message/same", json=body)
    b = await matrix.request(alice, "PUT", f"/rooms/{room_id}/send/m.room.message/same", json=body)
    assert a["event_id"] == b["event_id"]
    page = await matrix.request(alice, "GET", f"/rooms/{room_id}/messages", params={"dir": "b", "limit": 50})
    assert [e["content"].get("body") for e in page["chunk"]].count("once") == 1


async def test_messages_pagination_has_no_gaps(matrix):
    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice)
    sent = [await matrix.send(alice, room_id, f"m{i}") for i in range(25)]
    seen: list[str] = []
    frm = None
    for _ in range(20):
        params = {"dir": "b", "limit": 7}
        if frm:
            params["from"] = frm
        page = await matrix.request(alice, "GET", f"/rooms/{room_id}/messages", params=params)
        seen.extend(e["event_id"] for e in page["chunk"] if e["type"] == "m.room.message")
        if "end" not in page or not page["chunk"]:
            break
        frm = page["end"]
    assert list(reversed(seen)) == sent


async def test_redaction_removes_content(matrix):
    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice)
    eid = await matrix.send(alice, room_id, "oops")
    await matrix.request(alice, "PUT", f"/rooms/{room_id}/redact/{eid}/r1", json={"reason": "typo"})
    page = await matrix.request(alice, "GET", f"/rooms/{room_id}/messages", params={"dir": "b", "limit": 10})
    ev = next(e for e in page["chunk"] if e["event_id"] == eid)
    assert ev["content"] == {}


async def test_long_poll_wakes_promptly(matrix):
    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice)
    first = await matrix.sync(alice)

    async def later():
        await asyncio.sleep(0.3)
        return await matrix.send(alice, room_id, "wake up")

    t0 = time.monotonic()
    sender = asyncio.create_task(later())
    resp = await matrix.sync(alice, since=first["next_batch"], timeout=10000)
    elapsed = time.monotonic() - t0
    eid = await sender
    assert any(e["event_id"] == eid for e in _timeline(resp, room_id))
    assert elapsed < 5, "long-poll did not wake on new data"


async def test_typing_and_receipts_reach_sync(matrix):
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")
    room_id = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room_id)
    eid = await matrix.send(alice, room_id, "read me")
    await matrix.request(bob, "PUT", f"/rooms/{room_id}/typing/{bob.user_id}", json={"typing": True, "timeout": 10000})
    await matrix.request(bob, "POST", f"/rooms/{room_id}/receipt/m.read/{eid}", json={})

    def has(kind):
        def check(r):
            eph = r["rooms"]["join"].get(room_id, {}).get("ephemeral", {}).get("events", [])
            if kind == "typing":
                return any(e["type"] == "m.typing" and bob.user_id in e["content"].get("user_ids", []) for e in eph)
            return any(e["type"] == "m.receipt" and eid in e["content"] for e in eph)
        return check

    # An initial sync carries the current typing set and latest receipts.
    await matrix.sync_until(alice, has("typing"))
    await matrix.sync_until(alice, has("receipt"))


async def test_bad_input_gets_matrix_errors(matrix, client):
    alice = await matrix.register("alice")
    r = await client.post("/_matrix/client/v3/createRoom", content=b"{not json", headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    r = await client.post("/_matrix/client/v3/createRoom", json={"room_version": "99"}, headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    r = await client.put("/_matrix/client/v3/rooms/!nope:test.local/send/m.room.message/1", json={},
                         headers=alice.headers)
    assert r.status_code in (403, 404) and r.json()["errcode"] in ("M_FORBIDDEN", "M_NOT_FOUND")
    r = await client.get("/_matrix/client/v3/no/such/endpoint", headers=alice.headers)
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
    r = await client.get("/_matrix/client/v3/sync")
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    room_id = await matrix.create_room(alice)
    big = {"body": "x" * 70000, "msgtype": "m.text"}
    r = await client.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/big", json=big,
                         headers=alice.headers)
    assert r.status_code in (400, 413) and r.json()["errcode"] in ("M_TOO_LARGE", "M_BAD_JSON")


async def test_room_versions_1_to_12(matrix):
    alice = await matrix.register("alice")
    for v in [str(n) for n in range(1, 13)]:
        room_id = await matrix.create_room(alice, room_version=v, preset="public_chat", name=f"v{v}")
        await matrix.send(alice, room_id, f"in v{v}")
        create = await matrix.request(alice, "GET", f"/rooms/{room_id}/state/m.room.create")
        assert create["room_version"] == v


async def test_health_ready_metrics(client):
    assert (await client.get("/health")).status_code == 200
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    m = await client.get("/metrics")
    assert m.status_code == 200 and "http_requests" in m.text


async def test_displayname_change_updates_member_events(matrix):
    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice, preset="public_chat")
    await matrix.request(alice, "PUT", f"/profile/{alice.user_id}/displayname", json={"displayname": "Alice A."})
    member = await matrix.request(alice, "GET", f"/rooms/{room_id}/state/m.room.member/{alice.user_id}")
    assert member == {"membership": "join", "displayname": "Alice A."}
    # A user who joins later carries their profile in the join event.
    bob = await matrix.register("bob")
    await matrix.request(bob, "PUT", f"/profile/{bob.user_id}/displayname", json={"displayname": "Bobby"})
    await matrix.join(bob, room_id)
    member = await matrix.request(alice, "GET", f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
    assert member["displayname"] == "Bobby"


async def test_deactivation_leaves_rooms(matrix):
    alice = await matrix.register("alice", password="pw-alice-123")
    bob = await matrix.register("bob")
    room_id = await matrix.create_room(bob, preset="public_chat")
    await matrix.join(alice, room_id)
    await matrix.request(alice, "POST", "/account/deactivate", json={
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
                 "password": "pw-alice-123"}})
    members = await matrix.request(bob, "GET", f"/rooms/{room_id}/joined_members")
    assert alice.user_id not in members["joined"]


async def test_message_rate_limit_when_enabled(homeserver, matrix):
    from libs.config.model import RateLimit

    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice)
    rl = homeserver.config.rate_limiting
    rl.enabled = True
    rl.message = RateLimit(per_second=0.01, burst=2)
    try:
        await matrix.send(alice, room_id, "1")
        await matrix.send(alice, room_id, "2")
        r = await matrix.request(alice, "PUT", f"/rooms/{room_id}/send/m.room.message/over", expect=429,
                                 json={"msgtype": "m.text", "body": "3"})
        assert r["errcode"] == "M_LIMIT_EXCEEDED" and r["retry_after_ms"] > 0
    finally:
        rl.enabled = False


async def test_kick_ban_unban(matrix):
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")
    room_id = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room_id)
    # bob (power 0) cannot kick alice
    r = await matrix.request(bob, "POST", f"/rooms/{room_id}/kick", expect=403, json={"user_id": alice.user_id})
    assert r["errcode"] == "M_FORBIDDEN"
    await matrix.request(alice, "POST", f"/rooms/{room_id}/kick", json={"user_id": bob.user_id, "reason": "bye"})
    member = await matrix.request(alice, "GET", f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
    assert member["membership"] == "leave" and member["reason"] == "bye"
    await matrix.join(bob, room_id)
    await matrix.request(alice, "POST", f"/rooms/{room_id}/ban", json={"user_id": bob.user_id})
    r = await matrix.request(bob, "POST", f"/rooms/{room_id}/join", expect=403, json={})
    assert r["errcode"] == "M_FORBIDDEN"
    r = await matrix.request(alice, "POST", f"/rooms/{room_id}/unban", expect=200, json={"user_id": bob.user_id})
    await matrix.join(bob, room_id)
    members = await matrix.request(alice, "GET", f"/rooms/{room_id}/joined_members")
    assert bob.user_id in members["joined"]


async def test_directory_and_public_rooms(matrix):
    alice = await matrix.register("alice")
    room_id = await matrix.create_room(alice, preset="public_chat", visibility="public", name="Town square")
    private = await matrix.create_room(alice, preset="private_chat")
    await matrix.request(alice, "PUT", "/directory/room/%23town%3Atest.local", json={"room_id": room_id})
    await matrix.request(alice, "PUT", "/directory/room/%23town%3Atest.local", expect=409, json={"room_id": room_id})
    got = await matrix.request(None, "GET", "/directory/room/%23town%3Atest.local")
    assert got["room_id"] == room_id
    listing = await matrix.request(None, "GET", "/publicRooms")
    ids = [c["room_id"] for c in listing["chunk"]]
    assert room_id in ids and private not in ids
    entry = next(c for c in listing["chunk"] if c["room_id"] == room_id)
    assert entry["name"] == "Town square" and entry["num_joined_members"] == 1
    found = await matrix.request(alice, "POST", "/publicRooms", json={"filter": {"generic_search_term": "square"}})
    assert [c["room_id"] for c in found["chunk"]] == [room_id]
    none = await matrix.request(alice, "POST", "/publicRooms", json={"filter": {"generic_search_term": "zzz"}})
    assert none["chunk"] == []
    await matrix.request(alice, "PUT", f"/directory/list/room/{room_id}", json={"visibility": "private"})
    assert (await matrix.request(None, "GET", f"/directory/list/room/{room_id}"))["visibility"] == "private"
    await matrix.request(alice, "DELETE", "/directory/room/%23town%3Atest.local")
    r = await matrix.request(None, "GET", "/directory/room/%23town%3Atest.local", expect=404)
    assert r["errcode"] == "M_NOT_FOUND"


async def test_send_to_device(matrix):
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")
    first = await matrix.sync(bob)
    await matrix.request(alice, "PUT", "/sendToDevice/m.test/txn1", json={
        "messages": {bob.user_id: {bob.device_id: {"hello": "device"}}}})
    resp = await matrix.sync_until(bob, lambda r: r.get("to_device", {}).get("events"), since=first["next_batch"])
    ev = resp["to_device"]["events"][0]
    assert ev["type"] == "m.test" and ev["sender"] == alice.user_id and ev["content"] == {"hello": "device"}
    # Delivered once: acknowledged by syncing past it.
    after = await matrix.sync(bob, since=resp["next_batch"])
    assert not after.get("to_device", {}).get("events")
