"""Inbound EDUs and PDUs against a room's server ACL; inbound m.presence."""
from __future__ import annotations

from .test_send import ROOM, FakeRoomserver, fed, pdu, send  # noqa: F401  (fixture)


async def test_presence_edu_becomes_presence_records(fed):  # noqa: F811
    c, _sink, pub = fed
    edus = [{"edu_type": "m.presence", "content": {"push": [
        {"user_id": "@bob:remote.test", "presence": "online", "last_active_ago": 5000, "status_msg": "hi",
         "currently_active": True},
        {"user_id": "@eve:evil.test", "presence": "online", "last_active_ago": 0},   # not the origin's user
        {"user_id": "@carol:remote.test", "presence": "dancing"},                    # unknown state
        {"user_id": "@dan:remote.test", "presence": "unavailable", "last_active_ago": "x"},
        "junk",
    ]}}, {"edu_type": "m.presence", "content": {"push": "nope"}}]
    r = await send(c, "p1", {"pdus": [], "edus": edus})
    assert r.status_code == 200, r.text
    recs = [(t, k, v) for t, k, v in pub.records if t == "user.presence"]
    assert [k for _, k, _ in recs] == ["@bob:remote.test", "@dan:remote.test"]
    bob = recs[0][2]
    assert bob["presence"] == "online" and bob["status_msg"] == "hi"
    assert abs(bob["last_active_ts"] - recs[1][2]["last_active_ts"] + 5000) < 2000
    assert recs[1][2]["status_msg"] is None


async def test_server_acl_applies_to_edus_and_pdus(fed, monkeypatch):  # noqa: F811
    c, sink, pub = fed
    monkeypatch.setattr(FakeRoomserver, "acl", {"allow": ["*"], "deny": ["remote.test"]})
    good, good_id = pdu("denied by ACL")
    edus = [
        {"edu_type": "m.typing", "content": {"room_id": ROOM, "user_id": "@bob:remote.test", "typing": True}},
        {"edu_type": "m.receipt", "content": {ROOM: {"m.read": {
            "@bob:remote.test": {"event_ids": ["$x"], "data": {"ts": 1}}}}}},
        {"edu_type": "m.presence", "content": {"push": [{"user_id": "@bob:remote.test", "presence": "online"}]}},
    ]
    r = await send(c, "acl1", {"pdus": [good], "edus": edus})
    assert r.status_code == 200, r.text
    assert r.json()["pdus"][good_id]["error"].startswith("M_FORBIDDEN")
    assert sink.batches == []
    topics = [t for t, _, _ in pub.records]
    assert "ephemeral.typing" not in topics and "ephemeral.receipts" not in topics
    assert topics == ["user.presence"]   # presence is not room-scoped: no ACL applies
    # the same server admitted by the ACL gets through
    monkeypatch.setattr(FakeRoomserver, "acl", {"allow": ["remote.test"]})
    r = await send(c, "acl2", {"pdus": [pdu("allowed")[0]], "edus": edus[:2]})
    assert r.status_code == 200
    assert len(sink.batches) == 1
    assert {"ephemeral.typing", "ephemeral.receipts"} <= {t for t, _, _ in pub.records}


async def test_server_acl_applies_to_room_reads(fed, monkeypatch):  # noqa: F811
    """/state_ids (and every read route naming a room) refuses a server the ACL denies."""
    from urllib.parse import quote

    from services.federationapi.xmatrix import sign_request

    from .test_send import REMOTE

    async def state_ids(self, room_id, event_id):
        return ["$s"], ["$a"]

    monkeypatch.setattr(FakeRoomserver, "get_state_ids_and_auth_chain_ids", state_ids, raising=False)
    c, _sink, _pub = fed
    uri = f"/_matrix/federation/v1/state_ids/{quote(ROOM)}?event_id=%24e"

    async def get():
        return await c.get(uri, headers={"Authorization": sign_request(REMOTE, "remote.test", "us.test", "GET", uri)})

    r = await get()
    assert r.status_code == 200 and r.json() == {"pdu_ids": ["$s"], "auth_chain_ids": ["$a"]}
    monkeypatch.setattr(FakeRoomserver, "acl", {"allow": ["*"], "deny": ["remote.*"]})
    r = await get()
    assert r.status_code == 403 and "server ACL" in r.json()["error"]
