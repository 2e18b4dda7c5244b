"""Regressions found by SyTest (tests/sytest): each test names the SyTest case it mirrors."""
from __future__ import annotations

from urllib.parse import quote

import httpx


async def test_register_rejects_trailing_newline_in_username(client: httpx.AsyncClient) -> None:
    # "POST /register rejects registration of usernames with '\n'"
    r = await client.post("/_matrix/client/v3/register", json={
        "username": "bad\n", "password": "pw-pw-pw-pw", "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_USERNAME"


async def _login(client: httpx.AsyncClient, user_id: str, device_id: str) -> None:
    r = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
        "password": "correct horse battery", "device_id": device_id})
    assert r.status_code == 200, r.text


async def test_delete_device_with_another_users_password_is_403(matrix, client) -> None:
    # "DELETE /device/{deviceId} requires UI auth user to match device owner"
    alice = await matrix.register()
    eve = await matrix.register()
    await _login(client, alice.user_id, "DEV2")
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": eve.user_id},
            "password": "correct horse battery"}
    await matrix.request(alice, "DELETE", "/devices/DEV2", expect=403, json={"auth": auth})
    await matrix.request(alice, "GET", "/devices/DEV2")
    auth["identifier"]["user"] = alice.user_id
    await matrix.request(alice, "DELETE", "/devices/DEV2", json={"auth": auth})
    await matrix.request(alice, "GET", "/devices/DEV2", expect=404)


async def test_uia_session_is_bound_to_the_device_it_started_for(matrix, client) -> None:
    # "The operation must be consistent through an interactive authentication session"
    alice = await matrix.register()
    await _login(client, alice.user_id, "D1")
    await _login(client, alice.user_id, "D2")
    started = await matrix.request(alice, "DELETE", "/devices/D1", expect=401, json={})
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
            "password": "correct horse battery", "session": started["session"]}
    await matrix.request(alice, "DELETE", "/devices/D2", expect=403, json={"auth": auth})
    await matrix.request(alice, "GET", "/devices/D2")


async def test_create_room_numeric_version_is_bad_json(matrix) -> None:
    alice = await matrix.register()
    r = await matrix.request(alice, "POST", "/createRoom", expect=400, json={"room_version": 1})
    assert r["errcode"] == "M_BAD_JSON"


async def test_join_with_custom_content(matrix) -> None:
    # "POST /join/:room_id can join a room with custom content"
    alice = await matrix.register()
    bob = await matrix.register()
    room_id = await matrix.create_room(alice, preset="public_chat")
    await matrix.request(bob, "POST", f"/join/{quote(room_id)}", json={"foo": "bar", "membership": "leave"})
    member = await matrix.request(bob, "GET", f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
    assert member["foo"] == "bar" and member["membership"] == "join"


async def test_read_markers_set_fully_read(matrix) -> None:
    # "POST /rooms/:room_id/read_markers can create read marker"
    alice = await matrix.register()
    room_id = await matrix.create_room(alice)
    eid = await matrix.send(alice, room_id, "hello")
    await matrix.request(alice, "POST", f"/rooms/{room_id}/read_markers", json={"m.fully_read": eid, "m.read": eid})
    got = await matrix.request(alice, "GET", f"/user/{alice.user_id}/rooms/{room_id}/account_data/m.fully_read")
    assert got == {"event_id": eid}
    # ...and it stays reserved for clients writing account data directly.
    await matrix.request(alice, "PUT", f"/user/{alice.user_id}/rooms/{room_id}/account_data/m.fully_read",
                         expect=400, json={"event_id": eid})


async def test_messages_backwards_has_end_when_chunk_not_empty(matrix) -> None:
    # "GET /rooms/:room_id/messages returns a message": `end` with events, none on the empty page.
    alice = await matrix.register()
    room_id = await matrix.create_room(alice)
    await matrix.send(alice, room_id, "hello")
    page = await matrix.request(alice, "GET", f"/rooms/{room_id}/messages", params={"dir": "b"})
    assert page["chunk"] and "end" in page
    last = await matrix.request(alice, "GET", f"/rooms/{room_id}/messages", params={"dir": "b", "from": page["end"]})
    assert last["chunk"] == [] and "end" not in last


async def test_presence_status_roundtrip(matrix) -> None:
    # "GET /presence/:user_id/status fetches initial status", "PUT ... updates my presence"
    alice = await matrix.register()
    bob = await matrix.register()
    assert (await matrix.request(alice, "GET", f"/presence/{alice.user_id}/status"))["presence"] == "offline"
    await matrix.request(alice, "PUT", f"/presence/{alice.user_id}/status",
                         json={"presence": "online", "status_msg": "here"})
    got = await matrix.request(bob, "GET", f"/presence/{alice.user_id}/status")
    assert got["presence"] == "online" and got["status_msg"] == "here" and got["last_active_ago"] >= 0
    await matrix.request(bob, "PUT", f"/presence/{alice.user_id}/status", expect=403, json={"presence": "online"})
    r = await matrix.request(alice, "PUT", f"/presence/{alice.user_id}/status", expect=400,
                             json={"presence": "dancing"})
    assert r["errcode"] == "M_INVALID_PARAM"
    await matrix.request(alice, "GET", "/presence/@nobody:test.local/status", expect=404)


async def test_registration_session_remembers_parameters_and_is_idempotent(client) -> None:
    # "registration remembers parameters", "registration is idempotent, with username specified"
    url = "/_matrix/client/v3/register"
    r = await client.post(url, json={"username": "remembered", "password": "übers3kr1t", "device_id": "xyzzy"})
    assert r.status_code == 401
    session = r.json()["session"]
    r = await client.post(url, json={"auth": {"type": "m.login.dummy", "session": session}})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["user_id"].startswith("@remembered:") and first["device_id"] == "xyzzy"
    r = await client.post(url, json={"auth": {"type": "m.login.dummy", "session": session}})
    assert r.status_code == 200 and r.json()["user_id"] == first["user_id"]
    # The remembered password works (only its hash was kept in the session).
    r = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "remembered"},
        "password": "übers3kr1t"})
    assert r.status_code == 200, r.text


async def test_guest_joins_only_can_join_rooms_and_sends(matrix, client, homeserver) -> None:
    # "Guest users can join guest_access rooms", "... can send messages to guest_access rooms if joined"
    homeserver.config.registration.allow_guests = True
    r = await client.post("/_matrix/client/v3/register?kind=guest", json={})
    assert r.status_code == 200, r.text
    g = r.json()
    guest = type("G", (), {"headers": {"Authorization": f"Bearer {g['access_token']}"}})()
    alice = await matrix.register()
    closed = await matrix.create_room(alice, preset="public_chat")
    r = await matrix.request(guest, "POST", f"/rooms/{closed}/join", expect=403, json={})
    assert r["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    room_id = await matrix.create_room(alice, preset="public_chat", initial_state=[
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}])
    await matrix.request(guest, "POST", f"/join/{quote(room_id)}", json={})
    await matrix.request(guest, "PUT", f"/rooms/{room_id}/send/m.room.message/g1", json={"msgtype": "m.text", "body": "hi"})
    await matrix.request(guest, "POST", "/createRoom", expect=403, json={})


async def test_joining_twice_is_idempotent_and_member_state_can_be_put(matrix) -> None:
    # "Joining room twice is idempotent", "Room members can override their displayname on a room-specific basis"
    alice = await matrix.register()
    room_id = await matrix.create_room(alice, preset="public_chat")
    before = await matrix.request(alice, "GET", f"/rooms/{room_id}/state/m.room.member/{alice.user_id}", params={"format": "event"})
    await matrix.request(alice, "POST", f"/rooms/{room_id}/join", json={})
    after = await matrix.request(alice, "GET", f"/rooms/{room_id}/state/m.room.member/{alice.user_id}", params={"format": "event"})
    assert after["event_id"] == before["event_id"]
    await matrix.request(alice, "PUT", f"/rooms/{room_id}/state/m.room.member/{alice.user_id}",
                         json={"membership": "join", "displayname": "Room Alice"})
    got = await matrix.request(alice, "GET", f"/rooms/{room_id}/state/m.room.member/{alice.user_id}")
    assert got["displayname"] == "Room Alice"
    await matrix.request(alice, "PUT", f"/rooms/{room_id}/state/m.room.member/{alice.user_id}", expect=400,
                         json={"displayname": "no membership"})


async def test_room_summary_has_no_heroes_for_named_rooms(matrix) -> None:
    # "Named room comes with just joined member count summary"
    alice = await matrix.register()
    named = await matrix.create_room(alice, name="A room name")
    unnamed = await matrix.create_room(alice)
    resp = await matrix.sync(alice)
    assert resp["rooms"]["join"][named]["summary"] == {"m.joined_member_count": 1, "m.invited_member_count": 0}
    assert "m.heroes" in resp["rooms"]["join"][unnamed]["summary"]


async def test_e2e_keys_upload_query_claim(matrix) -> None:
    # tests/41end-to-end-keys: "Can upload device keys", "Can query device keys using POST",
    # "Can claim one time key using POST", "Rejects invalid device keys"
    alice = await matrix.register()
    bob = await matrix.register()
    dk = {"user_id": alice.user_id, "device_id": alice.device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
          "keys": {f"ed25519:{alice.device_id}": "abc"}, "signatures": {}}
    r = await matrix.request(alice, "POST", "/keys/upload", json={
        "device_keys": dk, "one_time_keys": {"signed_curve25519:AAAA": {"key": "k1"}, "signed_curve25519:AAAB": {"key": "k2"}}})
    assert r["one_time_key_counts"] == {"signed_curve25519": 2}
    bad = dict(dk, user_id=bob.user_id)
    await matrix.request(alice, "POST", "/keys/upload", expect=400, json={"device_keys": bad})
    q = await matrix.request(bob, "POST", "/keys/query", json={"device_keys": {alice.user_id: [], "@x:remote.example": []}})
    got = q["device_keys"][alice.user_id][alice.device_id]
    assert got["keys"] == dk["keys"] and "remote.example" in q["failures"]
    c = await matrix.request(bob, "POST", "/keys/claim",
                             json={"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
    claimed = c["one_time_keys"][alice.user_id][alice.device_id]
    assert list(claimed) == ["signed_curve25519:AAAA"]
    r = await matrix.request(alice, "POST", "/keys/upload", json={})
    assert r["one_time_key_counts"] == {"signed_curve25519": 1}
    await matrix.request(bob, "POST", "/keys/query", expect=400, json={"device_keys": {alice.user_id: "all"}})
