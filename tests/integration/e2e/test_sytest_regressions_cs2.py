"""SyTest client-server regressions, round 2: each test names the SyTest case it mirrors."""
from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

from tests.integration.conftest import MatrixTestClient


async def test_push_rule_paths_and_room_rule_ids(matrix: MatrixTestClient) -> None:
    # 61push/02add_rules.pl "Can add global push rule for room" (alias-looking room rule IDs)
    # and 61push/80torture.pl: malformed paths are 400s, not 404/405/307.
    alice = await matrix.register()
    rid = quote("#spam:example.com", safe="")
    await matrix.request(alice, "PUT", f"/pushrules/global/room/{rid}", json={"actions": ["notify"]})
    got = await matrix.request(alice, "GET", f"/pushrules/global/room/{rid}")
    assert got["rule_id"] == "#spam:example.com" and got["default"] is False
    for path in ("/pushrules/", "/pushrules/global", "/pushrules/global/room", "/pushrules/global/room/",
                 "/pushrules/global/override/.m.rule.master/not_an_attr"):
        await matrix.request(alice, "PUT", path, expect=400, json={"enabled": True})
    for path in ("/pushrules/global", "/pushrules/global/room", "/pushrules/global/override/.m.rule.master/not_an_attr"):
        await matrix.request(alice, "GET", path, expect=400)
    await matrix.request(alice, "GET", "/pushrules/global/override/not_a_rule_id", expect=404)
    assert "override" in await matrix.request(alice, "GET", "/pushrules/global/")


async def test_toggling_every_default_push_rule_is_quick(matrix: MatrixTestClient) -> None:
    # 61push/07_set_enabled.pl "Can enable/disable default rules": ~20 rules x 6 requests in 10 s.
    alice = await matrix.register()
    rules = (await matrix.request(alice, "GET", "/pushrules/"))["global"]
    start = time.monotonic()
    for kind, lst in rules.items():
        for rule in lst:
            path = f"/pushrules/global/{kind}/{quote(rule['rule_id'], safe='')}/enabled"
            for enabled in (True, False):
                await matrix.request(alice, "PUT", path, json={"enabled": enabled})
                assert await matrix.request(alice, "GET", path) == {"enabled": enabled}
    assert time.monotonic() - start < 8


_PUSHER = {"profile_tag": "tag", "kind": "http", "app_id": "sytest", "app_display_name": "SyTest",
           "device_display_name": "A testing machine", "pushkey": "key", "lang": "en",
           "data": {"url": "https://dummy.url/_matrix/push/v1/notify", "format": "event_id_only", "x": 1}}


async def test_pushers_set_get_and_password_change(matrix: MatrixTestClient, client) -> None:
    # 61push/06_get_pusher.pl "Can fetch a user's pushers"; 14account/01change-password.pl
    # "Pushers created with a different/the same access token are (not) deleted on password change".
    alice = await matrix.register(password="old password")
    await matrix.request(alice, "POST", "/pushers/set", json=_PUSHER)
    got = (await matrix.request(alice, "GET", "/pushers"))["pushers"]
    assert got == [{k: v for k, v in _PUSHER.items()}]
    # Missing fields, bad kind, no URL: 400.
    for broken in ({k: v for k, v in _PUSHER.items() if k != "lang"}, {**_PUSHER, "kind": "carrier-pigeon"},
                   {**_PUSHER, "data": {}}, {**_PUSHER, "app_id": 5}):
        await matrix.request(alice, "POST", "/pushers/set", expect=400, json=broken)
    # A second login's pusher goes when the password changes from the first device.
    r = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "old password"})
    other = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = await client.post("/_matrix/client/v3/pushers/set", headers=other, json={**_PUSHER, "pushkey": "k2"})
    assert r.status_code == 200
    assert len((await matrix.request(alice, "GET", "/pushers"))["pushers"]) == 2
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
            "password": "old password"}
    await matrix.request(alice, "POST", "/account/password", json={"new_password": "new password", "auth": auth})
    assert [p["pushkey"] for p in (await matrix.request(alice, "GET", "/pushers"))["pushers"]] == ["key"]
    # kind null deletes.
    await matrix.request(alice, "POST", "/pushers/set", json={**_PUSHER, "kind": None})
    assert (await matrix.request(alice, "GET", "/pushers"))["pushers"] == []


async def test_room_tags_and_their_sync(matrix: MatrixTestClient) -> None:
    # 42tags.pl: add/list/remove tags; tags in initial and incremental /sync, deletion too.
    alice = await matrix.register()
    room_id = await matrix.create_room(alice)
    base = f"/user/{alice.user_id}/rooms/{room_id}/tags"
    await matrix.request(alice, "DELETE", f"{base}/never_added", json={})
    first = await matrix.sync(alice)
    await matrix.request(alice, "PUT", f"{base}/test_tag", json={"order": 1})
    assert await matrix.request(alice, "GET", base) == {"tags": {"test_tag": {"order": 1}}}
    await matrix.request(alice, "PUT", f"{base}/bad", expect=400, json={"order": "high"})

    def tag_events(resp: dict) -> list[dict]:
        room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
        return [e for e in room.get("account_data", {}).get("events", []) if e["type"] == "m.tag"]

    await matrix.sync_until(alice, lambda r: bool(tag_events(r)), since=first["next_batch"])
    assert tag_events(await matrix.sync(alice))[0]["content"] == {"tags": {"test_tag": {"order": 1}}}
    inc = await matrix.sync_until(alice, lambda r: bool(tag_events(r)), since=first["next_batch"])
    assert tag_events(inc)[0]["content"]["tags"] == {"test_tag": {"order": 1}}
    await matrix.request(alice, "DELETE", f"{base}/test_tag", json={})
    assert await matrix.request(alice, "GET", base) == {"tags": {}}
    inc2 = await matrix.sync_until(alice, lambda r: bool(tag_events(r)), since=inc["next_batch"])
    assert tag_events(inc2)[0]["content"] == {"tags": {}}
    await matrix.request(alice, "GET", f"/user/@someone:else/rooms/{room_id}/tags", expect=403)


async def test_key_backup_versions_and_keys(matrix: MatrixTestClient) -> None:
    # 41end-to-end-keys/07-backup.pl: versions, empty backups, better/worse keys, old versions, deletion.
    alice = await matrix.register()
    await matrix.request(alice, "GET", "/room_keys/version", expect=404)
    mk = {"algorithm": "m.megolm_backup.v1", "auth_data": "anopaquestring"}
    v1 = (await matrix.request(alice, "POST", "/room_keys/version", json=mk))["version"]
    info = await matrix.request(alice, "GET", f"/room_keys/version/{v1}")
    assert info["auth_data"] == "anopaquestring" and info["version"] == v1 and info["count"] == 0
    await matrix.request(alice, "PUT", f"/room_keys/version/{v1}",
                         json={**mk, "auth_data": "other", "version": v1})
    assert (await matrix.request(alice, "GET", "/room_keys/version"))["auth_data"] == "other"
    r = await matrix.request(alice, "GET", "/room_keys/keys/!notaroom/nosession", expect=404, params={"version": v1})
    assert r["errcode"] == "M_NOT_FOUND"
    assert await matrix.request(alice, "GET", "/room_keys/keys/!notaroom", params={"version": v1}) == {"sessions": {}}
    assert await matrix.request(alice, "GET", "/room_keys/keys", params={"version": v1}) == {"rooms": {}}
    await matrix.request(alice, "GET", "/room_keys/keys", expect=404, params={"version": "bogus"})

    key = {"first_message_index": 2, "forwarded_count": 0, "is_verified": False, "session_data": "a"}
    path = "/room_keys/keys/!abcd/1234"
    assert (await matrix.request(alice, "PUT", path, params={"version": v1}, json=key))["count"] == 1
    await matrix.request(alice, "PUT", path, params={"version": v1}, json={**key, "first_message_index": 3, "session_data": "worse"})
    assert (await matrix.request(alice, "GET", path, params={"version": v1}))["session_data"] == "a"
    await matrix.request(alice, "PUT", path, params={"version": v1}, json={**key, "first_message_index": 1, "session_data": "better"})
    assert (await matrix.request(alice, "GET", path, params={"version": v1}))["first_message_index"] == 1
    await matrix.request(alice, "PUT", path, params={"version": v1}, expect=400, json={"session_data": "x"})

    v2 = (await matrix.request(alice, "POST", "/room_keys/version", json=mk))["version"]
    r = await matrix.request(alice, "PUT", path, params={"version": v1}, expect=403, json=key)
    assert r["errcode"] == "M_WRONG_ROOM_KEYS_VERSION" and r["current_version"] == v2
    await matrix.request(alice, "DELETE", f"/room_keys/version/{v2}")
    assert (await matrix.request(alice, "GET", "/room_keys/version"))["version"] == v1
    await matrix.request(alice, "GET", f"/room_keys/version/{v2}", expect=404)
    await matrix.request(alice, "DELETE", f"/room_keys/version/{v1}")
    v3 = (await matrix.request(alice, "POST", "/room_keys/version", json=mk))["version"]
    assert v3 not in (v1, v2)
    assert await matrix.request(alice, "GET", "/room_keys/keys", params={"version": v3}) == {"rooms": {}}


async def test_post_send_without_txn_and_json_limits(matrix: MatrixTestClient, client) -> None:
    # 80torture/20json.pl "Invalid JSON integers/floats/special values", 80torture/03events.pl
    # "Event size limits": all through the txn-less POST /rooms/{id}/send/{type}.
    alice = await matrix.register()
    room = await matrix.create_room(alice, room_version="6")
    url = f"/_matrix/client/v3/rooms/{room}/send/sytest.dummy"
    first = await client.post(url, headers=alice.headers, json={"body": "a"})
    second = await client.post(url, headers=alice.headers, json={"body": "a"})
    assert first.status_code == second.status_code == 200
    assert first.json()["event_id"] != second.json()["event_id"]  # no txn dedup
    for content in ({"body": 2 ** 53}, {"body": -(2 ** 53)}, {"body": 1.1}):
        r = await client.post(url, headers=alice.headers, json=content)
        assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await client.post(url, headers=alice.headers, content=b'{"body": Infinity}')
    assert r.status_code == 400
    r = await client.post(url, headers=alice.headers, json={"body": "A" * 70000})
    assert r.status_code == 413


async def test_filters_with_bad_room_or_sender_ids_are_rejected(matrix: MatrixTestClient) -> None:
    # 80torture/10filters.pl "Check creating invalid filters returns 4xx"
    alice = await matrix.register()
    path = f"/user/{alice.user_id}/filter"
    for bad in ({"room": {"timeline": {"rooms": ["not_a_room_id"]}}},
                {"room": {"timeline": {"senders": ["not_a_sender_id"]}}},
                {"room": {"rooms": ["#alias:x"]}}):
        await matrix.request(alice, "POST", path, expect=400, json=bad)
    await matrix.request(alice, "POST", path, json={"room": {"timeline": {"rooms": ["!r:x"], "senders": ["@u:x"]}}})


async def test_openid_token_exchange(matrix: MatrixTestClient, client) -> None:
    # 45openid.pl: request_token, userinfo with a good, bad and missing token.
    alice = await matrix.register()
    body = await matrix.request(alice, "POST", f"/user/{alice.user_id}/openid/request_token", json={})
    assert body["matrix_server_name"] == "test.local" and body["expires_in"] > 0
    r = await client.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": body["access_token"]})
    assert r.status_code == 200 and r.json() == {"sub": alice.user_id}
    r = await client.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": "an/invalid/token"})
    assert r.status_code == 401
    assert (await client.get("/_matrix/federation/v1/openid/userinfo")).status_code == 401
    # The user's own access token is not an OpenID token.
    r = await client.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": alice.access_token})
    assert r.status_code == 401
    bob = await matrix.register()
    await matrix.request(bob, "POST", f"/user/{alice.user_id}/openid/request_token", expect=403, json={})


async def test_whois_self(matrix: MatrixTestClient) -> None:
    # 48admin.pl "/whois": a user may look themselves up; devices carry their last connection.
    alice = await matrix.register()
    bob = await matrix.register()
    body = await matrix.request(alice, "GET", f"/admin/whois/{alice.user_id}")
    assert body["user_id"] == alice.user_id
    conns = body["devices"][alice.device_id]["sessions"][0]["connections"]
    assert conns and {"ip", "last_seen", "user_agent"} <= set(conns[0])
    await matrix.request(bob, "GET", f"/admin/whois/{alice.user_id}", expect=403)


async def test_messages_from_prev_batch_of_complete_initial_timeline(matrix: MatrixTestClient) -> None:
    # 10apidoc/34room-messages.pl "GET /rooms/:room_id/messages returns a message" (and "lazy loads
    # members correctly"): as in Synapse, a complete initial timeline's prev_batch is "now", so
    # paginating back from it returns the room's history, then a page without `end`.
    alice = await matrix.register()
    room = await matrix.create_room(alice)
    await matrix.send(alice, room, "Here is the message content")
    for _ in range(50):  # initial syncs until the message is projected
        tl = (await matrix.sync(alice))["rooms"]["join"].get(room, {}).get("timeline", {"events": []})
        if any(e["type"] == "m.room.message" for e in tl["events"]):
            break
        await asyncio.sleep(0.05)
    assert tl["limited"] is False
    page = await matrix.request(alice, "GET", f"/rooms/{room}/messages", params={"dir": "b", "from": tl["prev_batch"]})
    assert [e["type"] for e in page["chunk"]][0] == "m.room.message" and page["chunk"][-1]["type"] == "m.room.create"
    assert "end" in page
    lazy = await matrix.request(alice, "GET", f"/rooms/{room}/messages", params={
        "dir": "b", "from": tl["prev_batch"], "filter": '{"lazy_load_members": true}'})
    assert [(e["type"], e["state_key"]) for e in lazy["state"]] == [("m.room.member", alice.user_id)]
    last = await matrix.request(alice, "GET", f"/rooms/{room}/messages", params={"dir": "b", "from": page["end"]})
    assert last["chunk"] == [] and "end" not in last


async def test_messages_forwards_from_next_batch_has_end(matrix: MatrixTestClient) -> None:
    # 31sync/04timeline.pl "A next_batch token can be used in the v1 messages API"
    alice = await matrix.register()
    room = await matrix.create_room(alice)
    since = (await matrix.sync(alice))["next_batch"]
    eid = await matrix.send(alice, room, "2")
    page = await matrix.request(alice, "GET", f"/rooms/{room}/messages", params={"dir": "f", "from": since})
    assert [e["event_id"] for e in page["chunk"]] == [eid] and "end" in page
    after = await matrix.request(alice, "GET", f"/rooms/{room}/messages", params={"dir": "f", "from": page["end"]})
    assert after["chunk"] == [] and "end" not in after


async def test_current_state_in_timeline_despite_private_history(matrix: MatrixTestClient) -> None:
    # 31sync/06state.pl "Current state appears in timeline in private history"
    creator, syncer, invitee = await matrix.register(), await matrix.register(), await matrix.register()
    room = await matrix.create_room(creator, preset="public_chat")
    await matrix.join(syncer, room)
    await matrix.request(creator, "PUT", f"/rooms/{room}/state/m.room.history_visibility/",
                         json={"history_visibility": "joined"})
    await matrix.request(creator, "POST", f"/rooms/{room}/invite", json={"user_id": invitee.user_id})
    since = (await matrix.sync(syncer))["next_batch"]
    await matrix.request(syncer, "POST", f"/rooms/{room}/leave", json={})
    await matrix.join(invitee, room)
    await matrix.join(syncer, room)

    def invitee_join(resp: dict) -> bool:
        tl = resp["rooms"]["join"].get(room, {}).get("timeline", {}).get("events", [])
        return any(e["type"] == "m.room.member" and e["state_key"] == invitee.user_id
                   and e["content"]["membership"] == "join" for e in tl)

    synced = await matrix.sync_until(syncer, lambda r: room in r["rooms"]["join"], since=since)
    assert invitee_join(synced)


def _changed(resp: dict) -> list[str]:
    return resp.get("device_lists", {}).get("changed", [])


async def test_device_list_changes_in_sync_and_keys_changes(matrix: MatrixTestClient, client) -> None:
    # 41end-to-end-keys/06-device-lists.pl: "Local new/update/delete device changes appear in v2 /sync",
    # "Users receive device_list updates for their own devices", "Local device key changes appear in
    # /keys/changes", "New users appear in /keys/changes".
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room)
    since = (await matrix.sync_until(alice, lambda r: room in r["rooms"]["join"]))["next_batch"]
    r = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": "correct horse battery", "device_id": "NEWDEV"})
    assert r.status_code == 200
    got = await matrix.sync_until(alice, lambda r: bob.user_id in _changed(r), since=since)
    changes = await matrix.request(alice, "GET", "/keys/changes", params={"from": since, "to": got["next_batch"]})
    assert bob.user_id in changes["changed"]
    since = got["next_batch"]
    await matrix.request(bob, "PUT", "/devices/NEWDEV", json={"display_name": "renamed"})
    since = (await matrix.sync_until(alice, lambda r: bob.user_id in _changed(r), since=since))["next_batch"]
    # Own devices: Alice logs in again and sees herself.
    r = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "correct horse battery"})
    assert r.status_code == 200
    since = (await matrix.sync_until(alice, lambda r: alice.user_id in _changed(r), since=since))["next_batch"]
    await matrix.request(alice, "GET", "/keys/changes", expect=400, params={"from": since})
    await matrix.request(alice, "GET", "/keys/changes", expect=400, params={"from": since, "to": "garbage"})


async def test_new_room_members_appear_in_keys_changes(matrix: MatrixTestClient) -> None:
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    since = (await matrix.sync_until(alice, lambda r: room in r["rooms"]["join"]))["next_batch"]
    await matrix.join(bob, room)
    got = await matrix.sync_until(alice, lambda r: bob.user_id in _changed(r), since=since)
    changes = await matrix.request(alice, "GET", "/keys/changes", params={"from": since, "to": got["next_batch"]})
    assert changes["changed"] == [bob.user_id] and changes["left"] == []


async def test_queried_device_keys_always_have_unsigned(matrix: MatrixTestClient) -> None:
    # 41end-to-end-keys/01-upload-key.pl "Can query device keys using POST"
    alice = await matrix.register()
    keys = {"user_id": alice.user_id, "device_id": alice.device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {f"ed25519:{alice.device_id}": "k"}, "signatures": {}}
    await matrix.request(alice, "POST", "/keys/upload", json={"device_keys": keys})
    got = await matrix.request(alice, "POST", "/keys/query", json={"device_keys": {alice.user_id: []}})
    assert "unsigned" in got["device_keys"][alice.user_id][alice.device_id]


async def test_redactions_across_rooms_and_of_redactions(matrix: MatrixTestClient) -> None:
    # 30rooms/10redactions.pl "PUT /redact disallows redaction of event in different room",
    # "Redaction of a redaction redacts the redaction reason" (GET /event shows redactions).
    alice = await matrix.register()
    room1, room2 = await matrix.create_room(alice), await matrix.create_room(alice)
    eid = await matrix.send(alice, room1, "test")
    await matrix.request(alice, "PUT", f"/rooms/{room2}/redact/{eid}/t1", expect=400, json={})
    red = (await matrix.request(alice, "PUT", f"/rooms/{room1}/redact/{eid}/t2", json={"reason": "pun"}))["event_id"]
    assert (await matrix.request(alice, "GET", f"/rooms/{room1}/event/{eid}"))["content"] == {}
    assert (await matrix.request(alice, "GET", f"/rooms/{room1}/event/{red}"))["content"]["reason"] == "pun"
    await matrix.request(alice, "PUT", f"/rooms/{room1}/redact/{red}/t3", json={})
    assert "reason" not in (await matrix.request(alice, "GET", f"/rooms/{room1}/event/{red}"))["content"]
    await matrix.request(alice, "GET", f"/rooms/{room2}/event/{eid}", expect=404)


async def test_event_endpoint_respects_history_visibility(matrix: MatrixTestClient) -> None:
    # 30rooms/51event.pl "/event/ does not allow access to events before the user joined"
    alice, bob, eve = await matrix.register(), await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.history_visibility/",
                         json={"history_visibility": "joined"})
    before = await matrix.send(alice, room, "before bob")
    await matrix.join(bob, room)
    after = await matrix.send(alice, room, "after bob")
    await matrix.request(bob, "GET", f"/rooms/{room}/event/{before}", expect=404)
    assert (await matrix.request(bob, "GET", f"/rooms/{room}/event/{after}"))["content"]["body"] == "after bob"
    await matrix.request(eve, "GET", f"/rooms/{room}/event/{after}", expect=404)
    await matrix.request(bob, "GET", f"/rooms/{room}/context/{before}", expect=404)


async def test_deleting_the_canonical_alias_clears_it(matrix: MatrixTestClient) -> None:
    # 30rooms/05aliases.pl "Can delete canonical alias"
    alice = await matrix.register()
    room = await matrix.create_room(alice)
    alias = "#canon-del:test.local"
    await matrix.request(alice, "PUT", f"/directory/room/{quote(alias)}", json={"room_id": room})
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.canonical_alias/", json={"alias": alias})
    await matrix.request(alice, "DELETE", f"/directory/room/{quote(alias)}", json={})
    got = await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.canonical_alias/")
    assert "alias" not in got


async def test_newly_joined_room_timeline_is_like_an_initial_sync(matrix: MatrixTestClient) -> None:
    # 31sync/07invited.pl "Newly joined room is included in an incremental sync after invite",
    # 31sync/03joined.pl "Newly joined room has correct timeline in incremental sync".
    creator, user = await matrix.register(), await matrix.register()
    room = await matrix.create_room(creator)
    since = (await matrix.sync(user))["next_batch"]
    await matrix.request(creator, "POST", f"/rooms/{room}/invite", json={"user_id": user.user_id})
    since = (await matrix.sync_until(user, lambda r: room in r["rooms"]["invite"], since=since))["next_batch"]
    await matrix.join(user, room)
    joined = (await matrix.sync_until(user, lambda r: room in r["rooms"]["join"], since=since))["rooms"]["join"][room]
    types = [e["type"] for e in joined["timeline"]["events"]]
    assert types[0] == "m.room.create" and joined["timeline"]["limited"] is False
    assert joined["state"]["events"] == []
    # More events than the timeline limit: the newest ones, limited, the rest in state.
    room2 = await matrix.create_room(creator, preset="public_chat")
    for i in range(12):
        await matrix.send(creator, room2, f"m{i}")
    since = (await matrix.sync(user))["next_batch"]
    await matrix.join(user, room2)
    j2 = (await matrix.sync_until(user, lambda r: room2 in r["rooms"]["join"], since=since))["rooms"]["join"][room2]
    assert j2["timeline"]["limited"] is True and len(j2["timeline"]["events"]) == 10
    assert any(e["type"] == "m.room.create" for e in j2["state"]["events"])


async def test_guests_leave_when_guest_access_is_revoked(matrix: MatrixTestClient, client, homeserver) -> None:
    # 30rooms/13guestaccess.pl "Guest users are kicked from guest_access rooms on revocation of guest_access"
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.guest_access/", json={"guest_access": "can_join"})
    # Guest registration is off in the test config: make the guest account directly.
    userapi = next(s for s in homeserver.services if type(s).__name__ == "UserapiService").api
    guest_id = (await userapi.create_account("guest1", None, is_guest=True)).user_id
    login = await userapi.create_device(guest_id, None, None)
    guest_headers = {"Authorization": f"Bearer {login.access_token}"}
    r = await client.post(f"/_matrix/client/v3/join/{quote(room, safe='')}", headers=guest_headers, json={})
    assert r.status_code == 200, r.text
    await matrix.join(bob, room)
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.guest_access/", json={"guest_access": "forbidden"})
    got = await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.member/{guest_id}")
    assert got["membership"] == "leave"
    assert (await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.member/{bob.user_id}"))["membership"] == "join"
