"""Inbound /send over HTTP: X-Matrix authentication, limits, per-PDU results, dedup, EDUs."""
import time

import httpx
import pytest
from fastapi import FastAPI

from libs.config.model import FederationConfig
from libs.events.builder import build_event
from libs.events.room_versions import get_room_version
from libs.events.server_keys import build_server_keys, verify_server_keys
from libs.events.hashes import compute_event_id
from libs.events.signing import add_hashes_and_signature, generate_signing_key
from libs.http import install_error_handlers
from services.federationapi.api import PDUError
from services.federationapi.service import FederationService
from services.federationapi.xmatrix import sign_request

US = generate_signing_key("us")
REMOTE = generate_signing_key("r1")
V10 = get_room_version("10")
ROOM = "!room:us.test"


class FakeRoomserver:
    acl = None  # the content of ROOM's m.room.server_acl, if a test sets one

    async def get_room_version(self, room_id):
        return "10" if room_id == ROOM else None

    async def get_state_event(self, room_id, event_type, state_key):
        if room_id == ROOM and event_type == "m.room.server_acl" and self.acl is not None:
            return {"type": event_type, "state_key": "", "content": self.acl}
        return None

    async def get_joined_members(self, room_id):
        return ["@alice:us.test", "@bob:remote.test"] if room_id == ROOM else []

    async def resolve_alias(self, alias):
        return ROOM if alias == "#a:us.test" else None

    async def list_public_rooms(self):
        return [ROOM]

    async def get_current_state(self, room_id):
        return {("m.room.name", ""): {"content": {"name": "Lobby"}},
                ("m.room.member", "@alice:us.test"): {"content": {"membership": "join"}}}


class FakeUserapi:
    async def get_profile(self, user_id):
        return {"displayname": "Alice", "avatar_url": None} if user_id == "@alice:us.test" else None


class RecordingSink:
    def __init__(self):
        self.batches = []

    async def receive_pdus(self, origin, pdus):
        self.batches.append((origin, pdus))
        return {ev.event_id: (PDUError("M_FORBIDDEN", "auth") if ev.content.get("deny") else None) for ev in pdus}


class Publisher:
    def __init__(self):
        self.records = []

    async def publish(self, topic, key, record):
        self.records.append((topic, key, record))


class NoNetwork:
    async def get_json(self, *a, **k):
        raise OSError("no network in tests")

    async def post_json(self, *a, **k):
        raise OSError("no network in tests")

    async def put_json(self, *a, **k):
        raise OSError("no network in tests")

    async def aclose(self):
        pass


@pytest.fixture
async def fed(fed_store):
    cfg = FederationConfig(enabled=True, trusted_key_servers=[])
    sink = RecordingSink()
    svc = FederationService("us.test", [US], "0.1", config=cfg, db=fed_store.db, roomserver=FakeRoomserver(),
                            userapi=FakeUserapi(), sink=sink, client=NoNetwork())
    pub = Publisher()
    svc.transactions.publisher = pub
    body = build_server_keys("remote.test", [REMOTE], int(time.time() * 1000) + 3600_000)
    await svc.keyring.store_response(body, verify_server_keys(body, "remote.test"))
    app = FastAPI()
    install_error_handlers(app)
    for r in svc.routers:
        app.include_router(r)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, sink, pub


def pdu(body="hi", prev=None, sender="@bob:remote.test", **content):
    ev = build_event(V10, type="m.room.message", sender=sender, room_id=ROOM,
                     content={"msgtype": "m.text", "body": body, **content}, prev_events=prev or ["$p"],
                     auth_events=["$a"], depth=5, origin_server_ts=int(time.time() * 1000),
                     server_name="remote.test", signing_key=REMOTE)
    return dict(ev.pdu), ev.event_id


def resigned(p, **changes):
    p = {k: v for k, v in p.items() if k not in ("hashes", "signatures")}
    p.update(changes)
    add_hashes_and_signature(p, V10, "remote.test", REMOTE)
    return p, compute_event_id(p, V10)


async def send(c, txn, body, origin="remote.test", key=REMOTE, dest="us.test", header=None):
    uri = f"/_matrix/federation/v1/send/{txn}"
    h = header if header is not None else sign_request(key, origin, dest, "PUT", uri, body)
    return await c.put(uri, json=body, headers={"Authorization": h})


async def test_auth_failures_are_401(fed):
    c, sink, _ = fed
    body = {"pdus": [], "edus": []}
    assert (await c.put("/_matrix/federation/v1/send/1", json=body)).json()["errcode"] == "M_UNAUTHORIZED"
    # A header that does not parse is a bad request (400), still M_UNAUTHORIZED.
    r = await send(c, "1", body, header="X-Matrix garbage")
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNAUTHORIZED", r.text
    for r in [
        await send(c, "1", body, dest="other.test"),
        await send(c, "1", body, key=generate_signing_key("r1")),          # wrong key material
        await send(c, "1", body, key=generate_signing_key("zz")),          # unknown key id
        await send(c, "1", body, origin="stranger.test"),                  # keys cannot be fetched
        await send(c, "1", body, origin="us.test", key=US),                # claims to be us
    ]:
        assert r.status_code == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", r.text
    # Signed content differs from the body sent.
    uri = "/_matrix/federation/v1/send/2"
    h = sign_request(REMOTE, "remote.test", "us.test", "PUT", uri, {"pdus": [1]})
    r = await c.put(uri, json=body, headers={"Authorization": h})
    assert r.status_code == 401
    assert sink.batches == []


async def test_limits(fed):
    c, _, _ = fed
    r = await send(c, "big", {"pdus": [{}] * 51, "edus": []})
    assert r.status_code == 400 and r.json()["errcode"] == "M_TOO_LARGE"
    r = await send(c, "big2", {"pdus": [], "edus": [{}] * 101})
    assert r.status_code == 400 and r.json()["errcode"] == "M_TOO_LARGE"
    r = await send(c, "bad", {"pdus": "nope"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await send(c, "origin", {"origin": "evil.test", "pdus": []})
    assert r.status_code == 403


async def test_per_pdu_results_with_hostile_pdus(fed):
    c, sink, _ = fed
    good, good_id = pdu("good")
    denied, denied_id = pdu("denied", deny=True)
    badsig, badsig_id = pdu("badsig")
    badsig["signatures"]["remote.test"][REMOTE.key_id] = good["signatures"]["remote.test"][REMOTE.key_id]
    badhash, badhash_id = pdu("original")
    badhash["content"]["body"] = "tampered"       # content is not signed (redacted form), only hashed
    many_prev, many_prev_id = resigned(pdu("prev")[0], prev_events=[f"$e{i}" for i in range(21)])
    big, big_id = resigned(pdu("big")[0], content={"body": "x" * 70000})
    # A room v1-style PDU (event_id field, [id, hash] prev_events) in a v10 room.
    v1ish = {**good, "event_id": "$old:remote.test", "prev_events": [["$p:remote.test", {"sha256": "x"}]],
             "content": {"body": "v1"}}
    foreign = build_event(V10, type="m.room.message", sender="@eve:evil.test", room_id=ROOM,
                          content={"body": "x"}, prev_events=["$p"], auth_events=[], depth=1,
                          origin_server_ts=1, server_name="evil.test", signing_key=generate_signing_key("e"))
    unknown_room = {**good, "room_id": "!other:us.test"}
    body = {"origin": "remote.test", "pdus": [good, denied, badsig, badhash, many_prev, big, v1ish,
                                              dict(foreign.pdu), unknown_room, "junk", 42, None]}
    r = await send(c, "t1", body)
    assert r.status_code == 200, r.text
    res = r.json()["pdus"]
    assert res[good_id] == {}
    assert res[denied_id]["error"].startswith("M_FORBIDDEN")
    assert res[badsig_id]["error"].startswith("M_FORBIDDEN") and "signature" in res[badsig_id]["error"]
    assert res[badhash_id] == {}                          # accepted, but redacted
    assert res[many_prev_id]["error"].startswith("M_TOO_LARGE")
    assert res[big_id]["error"].startswith("M_TOO_LARGE")
    assert res[foreign.event_id]["error"].startswith("M_FORBIDDEN")  # no keys for evil.test
    assert any("M_BAD_JSON" in v.get("error", "") for k, v in res.items() if k not in
               {good_id, denied_id, badsig_id, badhash_id, many_prev_id, big_id, foreign.event_id})
    assert len(res) == 8  # unknown room and non-objects are not reported
    [(origin, handed)] = sink.batches
    assert origin == "remote.test"
    by_id = {e.event_id: e for e in handed}
    assert set(by_id) == {good_id, denied_id, badhash_id}
    assert "body" not in by_id[badhash_id].content        # redacted before hand-over
    assert by_id[good_id].content["body"] == "good"


async def test_transaction_dedup(fed):
    c, sink, _ = fed
    p, pid = pdu("once")
    r1 = await send(c, "dup", {"pdus": [p]})
    r2 = await send(c, "dup", {"pdus": [p]})
    assert r1.json() == r2.json() == {"pdus": {pid: {}}}
    assert len(sink.batches) == 1
    # Same txn ID from another origin would be a different transaction: here a new txn ID.
    await send(c, "dup2", {"pdus": [p]})
    assert len(sink.batches) == 2


async def test_unsupported_sink_refuses_everything(fed_store):
    svc = FederationService("us.test", [US], "0.1", config=FederationConfig(enabled=True, trusted_key_servers=[]),
                            db=fed_store.db, roomserver=FakeRoomserver(), client=NoNetwork())
    body = build_server_keys("remote.test", [REMOTE], int(time.time() * 1000) + 3600_000)
    await svc.keyring.store_response(body, verify_server_keys(body, "remote.test"))
    p, pid = pdu("x")
    res = await svc.transactions.handle("remote.test", "u1", {"pdus": [p]})
    assert res == {"pdus": {pid: {"error": "M_UNRECOGNIZED: federated rooms not supported yet"}}}


async def test_edus(fed):
    c, _, pub = fed
    edus = [
        {"edu_type": "m.typing", "content": {"room_id": ROOM, "user_id": "@bob:remote.test", "typing": True}},
        {"edu_type": "m.typing", "content": {"room_id": ROOM, "user_id": "@eve:evil.test", "typing": True}},
        {"edu_type": "m.typing", "content": {"room_id": "!unknown:x", "user_id": "@bob:remote.test", "typing": True}},
        {"edu_type": "m.receipt", "content": {ROOM: {"m.read": {
            "@bob:remote.test": {"event_ids": ["$e"], "data": {"ts": 5}},
            "@eve:evil.test": {"event_ids": ["$e"], "data": {"ts": 5}}}}}},
        {"edu_type": "m.direct_to_device", "content": {"sender": "@bob:remote.test", "type": "m.x",
                                                      "message_id": "m1", "messages": {
                                                          "@alice:us.test": {"DEV": {"a": 1}},
                                                          "@carol:elsewhere.test": {"D": {}}}}},
        {"edu_type": "m.device_list_update", "content": {"user_id": "@bob:remote.test", "device_id": "D"}},
        {"edu_type": "m.presence", "content": {"push": []}},
        {"edu_type": "m.typing", "content": "junk"}, "junk", {"edu_type": "m.receipt", "content": {ROOM: 5}},
    ]
    r = await send(c, "e1", {"pdus": [], "edus": edus})
    assert r.status_code == 200 and r.json() == {"pdus": {}}
    topics = [(t, k) for t, k, _ in pub.records]
    assert topics == [("ephemeral.typing", ROOM), ("ephemeral.receipts", ROOM), ("user.to_device", "@alice:us.test"),
                      ("user.key_changes", "@bob:remote.test")]
    assert pub.records[0][2] == {"room_id": ROOM, "user_id": "@bob:remote.test", "typing": True, "timeout_ms": 30000}
    assert pub.records[1][2]["event_id"] == "$e" and pub.records[1][2]["ts"] == 5
    assert pub.records[2][2]["content"] == {"a": 1} and pub.records[2][2]["device_id"] == "DEV"


async def test_queries(fed):
    c, _, _ = fed

    async def get(uri):
        return await c.get(uri, headers={"Authorization": sign_request(REMOTE, "remote.test", "us.test", "GET", uri)})

    r = await get("/_matrix/federation/v1/query/profile?user_id=%40alice%3Aus.test")
    assert r.json() == {"displayname": "Alice"}
    r = await get("/_matrix/federation/v1/query/profile?user_id=%40alice%3Aus.test&field=avatar_url")
    assert r.status_code == 200 and r.json() == {}
    assert (await get("/_matrix/federation/v1/query/profile?user_id=%40nobody%3Aus.test")).status_code == 404
    assert (await get("/_matrix/federation/v1/query/profile?user_id=%40a%3Aus.test&field=x")).status_code == 400
    r = await get("/_matrix/federation/v1/query/directory?room_alias=%23a%3Aus.test")
    assert r.json() == {"room_id": ROOM, "servers": ["us.test", "remote.test"]}
    assert (await get("/_matrix/federation/v1/query/directory?room_alias=%23b%3Aus.test")).status_code == 404
    r = await get("/_matrix/federation/v1/publicRooms")
    assert r.json()["chunk"][0]["name"] == "Lobby" and r.json()["chunk"][0]["num_joined_members"] == 1
    assert (await c.get("/_matrix/federation/v1/publicRooms")).status_code == 401
    # Notary endpoints are public.
    r = await c.get("/_matrix/key/v2/query/remote.test")
    [k] = r.json()["server_keys"]
    assert k["server_name"] == "remote.test" and "us.test" in k["signatures"]
    r = await c.post("/_matrix/key/v2/query", json={"server_keys": {"remote.test": {}, "us.test": {}}})
    assert sorted(x["server_name"] for x in r.json()["server_keys"]) == ["remote.test", "us.test"]
    r = await c.post("/_matrix/key/v2/query", json={"server_keys": 5})
    assert r.status_code == 400


async def test_origin_with_non_numeric_port_is_400(fed):
    """SyTest "Non-numeric ports in server names are rejected": 400, not 401."""
    c, sink, _ = fed
    body = {"pdus": [], "edus": []}
    h = sign_request(REMOTE, "localhost:http", "us.test", "PUT", "/_matrix/federation/v1/send/9", body)
    r = await send(c, "9", body, header=h)
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNAUTHORIZED", r.text
    assert sink.batches == []


async def test_request_with_floats_is_authenticated_and_the_pdu_refused(fed):
    """SyTest "... rejects invalid JSON for room version 6": a float in a PDU is the PDU's
    problem (M_BAD_JSON for v6+), not an unverifiable request signature (401)."""
    from libs.events.canonical_json import encode_canonical_json
    from libs.events.unpadded_base64 import encode_base64
    from services.federationapi.xmatrix import XMatrixAuth, format_xmatrix, request_signing_object

    c, sink, _ = fed
    p, eid = pdu("float")
    p["content"]["bad_val"] = 1.1
    body = {"origin": "remote.test", "origin_server_ts": 1, "pdus": [p], "edus": []}
    uri = "/_matrix/federation/v1/send/floaty"
    obj = request_signing_object("PUT", uri, "remote.test", "us.test", body)
    sig = encode_base64(REMOTE.sign(encode_canonical_json(obj, strict=False)))  # as Python's json would
    h = format_xmatrix(XMatrixAuth(origin="remote.test", key_id=REMOTE.key_id, sig=sig, destination="us.test"))
    r = await send(c, "floaty", body, header=h)
    assert r.status_code == 200, r.text
    results = r.json()["pdus"]
    assert len(results) == 1 and "error" in next(iter(results.values()))
    assert sink.batches == []
    # A wrong signature over the same body is still 401.
    bad = format_xmatrix(XMatrixAuth(origin="remote.test", key_id=REMOTE.key_id, sig=sig[:-4] + "AAAA",
                                     destination="us.test"))
    assert (await send(c, "floaty2", body, header=bad)).status_code == 401
