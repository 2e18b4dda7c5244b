"""Federated input end to end on an embedded homeserver: signed PDUs of a fake remote
server through `PUT /send` land in a local user's /sync (or are soft-failed / refused),
and the federation read routes answer the servers in the room only."""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from libs.config.loader import dev_config
from libs.events.server_keys import build_server_keys, verify_server_keys
from libs.events.signing import SigningKey
from services.federationapi.xmatrix import sign_request
from services.roomserver.service import RoomserverService

from .fedhelpers import REMOTE, REMOTE_KEY, FakeRemote

US = "test.local"
BOB = f"@bob:{REMOTE}"
STRANGER = "stranger.test"
STRANGER_KEY = SigningKey.from_seed(bytes(range(3, 35)), "s1")


@pytest.fixture
async def hs(tmp_path) -> Any:
    from axon.embedded import build_homeserver

    cfg = dev_config(str(tmp_path / "hs"))
    cfg.server_name = US
    cfg.logging.level = "WARNING"
    cfg.federation.enabled = True
    cfg.federation.trusted_key_servers = []
    cfg.federation.max_retries = 0
    h = await build_homeserver(cfg, bcrypt_rounds=4)
    await h.start()
    fed = next(s for s in h.services if type(s).__name__ == "FederationService")
    for server, key in ((REMOTE, REMOTE_KEY), (STRANGER, STRANGER_KEY)):
        body = build_server_keys(server, [key], int(time.time() * 1000) + 3600_000)
        await fed.keyring.store_response(body, verify_server_keys(body, server))
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def http(hs: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hs.app), base_url="http://hs", timeout=30) as c:
        yield c


def roomserver(hs: Any) -> RoomserverService:
    return next(s for s in hs.services if isinstance(s, RoomserverService))


async def fed_request(http: httpx.AsyncClient, method: str, uri: str, body: Any = None,
                      origin: str = REMOTE, key: SigningKey = REMOTE_KEY) -> httpx.Response:
    h = sign_request(key, origin, US, method, uri, body)
    return await http.request(method, uri, json=body, headers={"Authorization": h})


async def register(http: httpx.AsyncClient, name: str) -> dict[str, str]:
    r = await http.post("/_matrix/client/v3/register", json={
        "username": name, "password": "pw-pw-pw-pw", "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def sync_until(http: httpx.AsyncClient, auth: dict[str, str], room_id: str, pred: Any) -> list[dict]:
    since = None
    for _ in range(20):
        params: dict[str, Any] = {"timeout": 500}
        if since:
            params["since"] = since
        r = await http.get("/_matrix/client/v3/sync", params=params, headers=auth)
        assert r.status_code == 200
        body = r.json()
        since = body["next_batch"]
        tl = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
        if pred(tl):
            return tl
    raise AssertionError("sync condition not met")


async def test_send_sync_softfail_and_reads(hs: Any, http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    r = await http.post("/_matrix/client/v3/createRoom", json={"preset": "public_chat", "room_version": "10"},
                        headers=alice)
    room_id = r.json()["room_id"]
    rs = roomserver(hs)
    remote = FakeRemote(rs.processor, room_id)
    # Bob joins and talks, through /send.
    join = await remote.join(BOB)
    state = {k: v[0] for k, v in (await rs.processor.room(room_id)).state.items()}
    msg = await remote.message(BOB, "hello from afar", prev=[join.event_id], depth=join.depth + 1,
                               state={**state, ("m.room.member", BOB): join.event_id})
    r = await fed_request(http, "PUT", "/_matrix/federation/v1/send/t1",
                          {"origin": REMOTE, "origin_server_ts": 1, "pdus": [join.pdu, msg.pdu]})
    assert r.status_code == 200 and r.json() == {"pdus": {join.event_id: {}, msg.event_id: {}}}, r.text
    await sync_until(http, alice, room_id, lambda tl: any(e["event_id"] == msg.event_id for e in tl))
    members = await http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", headers=alice)
    assert BOB in members.json()["joined"]

    # A message from someone not in the room: stored as rejected; the /send answer names
    # processing errors only (as Synapse; SyTest expects {}).
    stranger_msg = await remote.message("@eve:remote.test", "let me in")
    r = await fed_request(http, "PUT", "/_matrix/federation/v1/send/t2", {"pdus": [stranger_msg.pdu]})
    assert r.json()["pdus"][stranger_msg.event_id] == {}
    row = await roomserver(hs).store.get_event_row(stranger_msg.event_id)
    assert row is not None and row.rejected

    # The read routes: servers in the room only.
    uri = f"/_matrix/federation/v1/state_ids/{quote(room_id)}?event_id={quote(msg.event_id)}"
    r = await fed_request(http, "GET", uri)
    assert r.status_code == 200, r.text
    assert join.event_id in r.json()["pdu_ids"] and r.json()["auth_chain_ids"]
    r = await fed_request(http, "GET", uri, origin=STRANGER, key=STRANGER_KEY)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await fed_request(http, "GET", f"/_matrix/federation/v1/state/{quote(room_id)}?event_id={quote(msg.event_id)}")
    assert r.status_code == 200 and {p["type"] for p in r.json()["pdus"]} >= {"m.room.create", "m.room.member"}
    r = await fed_request(http, "GET", f"/_matrix/federation/v1/event/{quote(msg.event_id)}")
    assert r.status_code == 200 and r.json()["pdus"][0]["content"]["body"] == "hello from afar"
    r = await fed_request(http, "GET", f"/_matrix/federation/v1/event/{quote('$unknown')}")
    assert r.status_code == 404
    r = await fed_request(http, "GET", f"/_matrix/federation/v1/event_auth/{quote(room_id)}/{quote(msg.event_id)}")
    assert r.status_code == 200 and {p["type"] for p in r.json()["auth_chain"]} >= {"m.room.create"}
    r = await fed_request(http, "GET",
                          f"/_matrix/federation/v1/backfill/{quote(room_id)}?v={quote(msg.event_id)}&limit=2")
    assert r.status_code == 200 and len(r.json()["pdus"]) == 2
    r = await fed_request(http, "POST", f"/_matrix/federation/v1/get_missing_events/{quote(room_id)}",
                          {"earliest_events": [], "latest_events": [msg.event_id], "limit": 1})
    assert r.status_code == 200 and len(r.json()["events"]) == 1
    r = await fed_request(http, "POST", f"/_matrix/federation/v1/get_missing_events/{quote(room_id)}",
                          {"latest_events": "nope"})
    assert r.status_code == 400

    # Soft-fail: alice bans bob; bob's server had not seen it.
    room = await rs.processor.room(room_id)
    before, before_state = list(room.extremities), {k: v[0] for k, v in room.state.items()}
    r = await http.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/ban", json={"user_id": BOB}, headers=alice)
    assert r.status_code == 200
    sneaky = await remote.message(BOB, "sneaky", prev=before, state=before_state)
    marker = await remote.message(BOB, "unrelated")  # sender banned now: rejected at the state before it
    r = await fed_request(http, "PUT", "/_matrix/federation/v1/send/t3", {"pdus": [sneaky.pdu, marker.pdu]})
    assert r.json()["pdus"][sneaky.event_id] == {}  # accepted (soft-failed)
    assert r.json()["pdus"][marker.event_id] == {}  # processed: stored rejected
    assert (await rs.store.get_event_row(marker.event_id)).rejected
    row = await rs.store.get_event_row(sneaky.event_id)
    assert row is not None and row.soft_failed
    # Alice's timeline never shows it: a later message of hers arrives, the sneaky one does not.
    await http.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/x1",
                   json={"msgtype": "m.text", "body": "after"}, headers=alice)
    r = await http.get("/_matrix/client/v3/sync", headers=alice)
    tl = r.json()["rooms"]["join"][room_id]["timeline"]["events"]
    bodies = [e.get("content", {}).get("body") for e in tl]
    assert "after" in bodies and "sneaky" not in bodies


async def test_bad_signature_and_bad_hash(hs: Any, http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    r = await http.post("/_matrix/client/v3/createRoom", json={"preset": "public_chat", "room_version": "10"},
                        headers=alice)
    room_id = r.json()["room_id"]
    rs = roomserver(hs)
    remote = FakeRemote(rs.processor, room_id)
    join = await remote.join(BOB)
    r = await fed_request(http, "PUT", "/_matrix/federation/v1/send/s1", {"pdus": [join.pdu]})
    assert r.json() == {"pdus": {join.event_id: {}}}
    # Signed by a key the remote does not have: refused before the roomserver, not stored.
    forged = await FakeRemote(rs.processor, room_id, key=STRANGER_KEY).message(BOB, "forged")
    # Content changed after signing: the hash no longer matches, stored redacted.
    tampered = await remote.message(BOB, "original")
    tampered_pdu = dict(tampered.pdu, content={"msgtype": "m.text", "body": "tampered"})
    r = await fed_request(http, "PUT", "/_matrix/federation/v1/send/s2", {"pdus": [forged.pdu, tampered_pdu]})
    res = r.json()["pdus"]
    assert "signature" in res[forged.event_id]["error"]
    assert await rs.store.get_event_row(forged.event_id) is None
    assert res[tampered.event_id] == {}
    row = await rs.store.get_event_row(tampered.event_id)
    assert row is not None and row.pdu["content"] == {}


class GapServer:
    """A federation client whose /get_missing_events answers with fixed PDUs."""

    def __init__(self, pdus: list[dict[str, Any]]) -> None:
        self.pdus = pdus
        self.asked: list[tuple[str, str, Any]] = []

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        self.asked.append((destination, path, content))
        return {"events": self.pdus}

    async def get_json(self, destination: str, path: str, query: Any = None, **kw: Any) -> Any:
        self.asked.append((destination, path, None))
        return {"auth_chain": self.pdus}


async def test_gap_filled_through_get_missing_events(hs: Any, http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    r = await http.post("/_matrix/client/v3/createRoom", json={"preset": "public_chat", "room_version": "10"},
                        headers=alice)
    room_id = r.json()["room_id"]
    rs = roomserver(hs)
    remote = FakeRemote(rs.processor, room_id)
    join = await remote.join(BOB)
    assert (await fed_request(http, "PUT", "/_matrix/federation/v1/send/g1", {"pdus": [join.pdu]})).json() == \
        {"pdus": {join.event_id: {}}}
    state = {k: v[0] for k, v in (await rs.processor.room(room_id)).state.items()}
    m1 = await remote.message(BOB, "one", prev=[join.event_id], depth=join.depth + 1, state=state)
    m2 = await remote.message(BOB, "two", prev=[m1.event_id], depth=join.depth + 2, state=state)
    forged = await FakeRemote(rs.processor, room_id, key=STRANGER_KEY).message(BOB, "forged", state=state)
    m3 = await remote.message(BOB, "three", prev=[m2.event_id], depth=join.depth + 3, state=state)
    gap = GapServer([m2.pdu, forged.pdu, m1.pdu])
    fed = next(s for s in hs.services if type(s).__name__ == "FederationService")
    # The federationapi's side (what the cluster's roomserver calls over the RPC): checked PDUs only.
    fed.api.missing_events.client = gap
    got = await fed.api.get_missing_events(REMOTE, room_id, [], [m3.event_id], 10, 0)
    assert sorted(p["content"]["body"] for p in got) == ["one", "two"]
    chain = await fed.api.get_event_auth(REMOTE, room_id, m3.event_id)
    assert sorted(p["content"]["body"] for p in chain) == ["one", "two"]
    assert "/event_auth/" in gap.asked[-1][1]
    # The embedded roomserver's fetcher: the gap is filled when m3 arrives.
    rs.processor.federated.fetcher.client = gap
    r = await fed_request(http, "PUT", "/_matrix/federation/v1/send/g2", {"pdus": [m3.pdu]})
    assert r.json() == {"pdus": {m3.event_id: {}}}
    assert gap.asked[-1][0] == REMOTE and "get_missing_events" in gap.asked[-1][1]
    assert gap.asked[-1][2]["latest_events"] == [m3.event_id]
    for e in (m1, m2):
        row = await rs.store.get_event_row(e.event_id)
        assert row is not None and not row.rejected
    assert await rs.store.get_event_row(forged.event_id) is None
    await sync_until(http, alice, room_id, lambda tl: {"one", "two", "three"} <= {
        e.get("content", {}).get("body") for e in tl})


async def test_backfill_redacts_what_the_server_could_not_see(hs: Any, http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    r = await http.post("/_matrix/client/v3/createRoom", json={
        "preset": "public_chat", "room_version": "10",
        "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                           "content": {"history_visibility": "joined"}}]}, headers=alice)
    room_id = r.json()["room_id"]
    before = await http.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/b1",
                            json={"msgtype": "m.text", "body": "before bob"}, headers=alice)
    before_id = before.json()["event_id"]
    rs = roomserver(hs)
    join = await FakeRemote(rs.processor, room_id).join(BOB)
    assert (await fed_request(http, "PUT", "/_matrix/federation/v1/send/v1", {"pdus": [join.pdu]})).json() == \
        {"pdus": {join.event_id: {}}}
    after = await http.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/a1",
                           json={"msgtype": "m.text", "body": "after bob"}, headers=alice)
    after_id = after.json()["event_id"]
    r = await fed_request(http, "GET",
                          f"/_matrix/federation/v1/backfill/{quote(room_id)}?v={quote(after_id)}&limit=4")
    assert r.status_code == 200
    from libs.events.hashes import compute_event_id
    from libs.events.room_versions import get_room_version

    by_id = {compute_event_id(p, get_room_version("10")): p for p in r.json()["pdus"]}
    assert by_id[after_id]["content"]["body"] == "after bob"
    assert by_id[before_id]["content"] == {}  # bob's server had nobody in the room then
    assert by_id[join.event_id]["content"]["membership"] == "join"  # its own user's join
    r = await fed_request(http, "GET", f"/_matrix/federation/v1/event/{quote(before_id)}")
    assert r.json()["pdus"][0]["content"] == {}
