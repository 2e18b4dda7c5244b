"""Presence in /sync and the legacy /events, /initialSync, /rooms/{id}/initialSync
(mirrors SyTest 40presence.pl, 31sync/05presence.pl, 21presence-events.pl, and the
`with_events` fixtures of 30rooms/20typing.pl)."""
from __future__ import annotations

import json

from services.syncapi.presence import PresenceRecord, PresenceState
from services.syncapi.streams import parse_token

NO_ROOMS = json.dumps({"room": {"rooms": []}})


def test_presence_state_positions() -> None:
    st = PresenceState()
    a = PresenceRecord("@a:x", "online", None, 1)
    assert st.set(a) and not st.set(a)  # the same record twice is not a change
    assert st.set(PresenceRecord("@b:x", "unavailable", "brb", 2))
    assert [r.user_id for r in st.changed(["@a:x", "@b:x"], 1)] == ["@b:x"]
    assert [r.user_id for r in st.changed(["@a:x", "@b:x"], None)] == ["@a:x", "@b:x"]
    assert len(st.changed(["@a:x", "@b:x"], 99)) == 2  # a token from before a restart: everything
    assert st.changed(["@c:x"], 0) == []
    ev = st.get("@b:x").to_event(10, legacy=True)
    assert ev["content"] == {"presence": "unavailable", "last_active_ago": 8, "status_msg": "brb", "user_id": "@b:x"}


def test_tokens_with_and_without_presence_part() -> None:
    tok = parse_token("s1_2_3_4_5_6_7")
    assert tok.presence == 7 and tok.to_string() == "s1_2_3_4_5_6_7"
    assert parse_token("s1_2_3_4_5_6").presence == 0  # tokens issued before presence existed


def _presence_of(resp: dict, user_id: str) -> list[dict]:
    return [e for e in resp["presence"]["events"] if e["sender"] == user_id]


async def test_presence_reaches_room_members_and_self(matrix) -> None:
    alice, bob, carol = await matrix.register(), await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room)
    b0 = await matrix.sync(bob, filter=NO_ROOMS, set_presence="offline")
    c0 = await matrix.sync(carol, filter=NO_ROOMS, set_presence="offline")
    await matrix.request(alice, "PUT", f"/presence/{alice.user_id}/status",
                         json={"presence": "online", "status_msg": "here"})
    got = await matrix.sync_until(bob, lambda r: bool(_presence_of(r, alice.user_id)), since=b0["next_batch"])
    ev = _presence_of(got, alice.user_id)[-1]
    assert ev["type"] == "m.presence" and ev["content"]["presence"] == "online"
    assert ev["content"]["status_msg"] == "here" and "last_active_ago" in ev["content"]
    own = await matrix.sync_until(alice, lambda r: bool(_presence_of(r, alice.user_id)))
    assert _presence_of(own, alice.user_id)[-1]["content"]["status_msg"] == "here"
    # carol shares no room with alice: nothing about alice
    c1 = await matrix.sync(carol, since=c0["next_batch"], timeout=300, set_presence="offline")
    assert _presence_of(c1, alice.user_id) == []

    # set_presence on /sync: unavailable is delivered; offline changes nothing
    b1 = await matrix.sync(bob, filter=NO_ROOMS, set_presence="offline")
    await matrix.sync(alice, set_presence="unavailable")
    got = await matrix.sync_until(
        bob, lambda r: any(e["content"]["presence"] == "unavailable" for e in _presence_of(r, alice.user_id)),
        since=b1["next_batch"])
    assert got["next_batch"] != b1["next_batch"]
    await matrix.sync(alice)  # a plain sync keeps an explicit unavailable
    status = await matrix.request(alice, "GET", f"/presence/{alice.user_id}/status")
    assert status["presence"] == "unavailable"


async def test_sync_with_set_presence_offline_is_not_online(matrix) -> None:
    dave = await matrix.register()
    resp = await matrix.sync(dave, set_presence="offline", filter=json.dumps({"presence": {"types": ["m.presence"]}}))
    assert all(e["content"]["presence"] == "offline" for e in _presence_of(resp, dave.user_id))
    status = await matrix.request(dave, "GET", f"/presence/{dave.user_id}/status")
    assert status["presence"] == "offline"


async def test_events_stream(matrix) -> None:
    alice = await matrix.register()
    room = await matrix.create_room(alice)
    first = await matrix.request(alice, "GET", "/events", params={"timeout": 0})
    assert first["chunk"] == [] and first["end"]
    event_id = await matrix.send(alice, room, "via /events")
    got = await matrix.request(alice, "GET", "/events", params={"from": first["end"], "timeout": 2000})
    msgs = [e for e in got["chunk"] if e["type"] == "m.room.message"]
    assert [(e["event_id"], e["room_id"]) for e in msgs] == [(event_id, room)]
    await matrix.request(alice, "PUT", f"/rooms/{room}/typing/{alice.user_id}", json={"typing": True, "timeout": 10000})
    got2 = await matrix.request(alice, "GET", "/events", params={"from": got["end"], "timeout": 2000})
    typing = [e for e in got2["chunk"] if e["type"] == "m.typing"]
    assert typing and typing[0]["room_id"] == room and typing[0]["content"]["user_ids"] == [alice.user_id]
    bad = await matrix.request(alice, "GET", "/events", params={"from": "garbage"}, expect=400)
    assert bad["errcode"] == "M_INVALID_PARAM"


async def test_initial_sync(matrix) -> None:
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat", name="legacy")
    await matrix.send(alice, room, "hello")
    body = await matrix.request(alice, "GET", "/initialSync", params={"limit": 5})
    entry = next(r for r in body["rooms"] if r["room_id"] == room)
    assert entry["membership"] == "join" and entry["visibility"] == "public"
    assert entry["messages"]["chunk"][-1]["content"]["body"] == "hello"
    assert len(entry["messages"]["chunk"]) <= 5
    assert {"m.room.create", "m.room.name"} <= {e["type"] for e in entry["state"]}
    assert any(p["content"]["user_id"] == alice.user_id for p in body["presence"])
    one = await matrix.request(alice, "GET", f"/rooms/{room}/initialSync")
    assert one["room_id"] == room and one["membership"] == "join"
    assert any(e["type"] == "m.room.name" for e in one["state"])
    r = await matrix.request(bob, "GET", f"/rooms/{room}/initialSync", expect=403)
    assert r["errcode"] == "M_FORBIDDEN"
