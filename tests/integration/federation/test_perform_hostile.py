"""Outbound handshakes against a remote that answers junk: always a MatrixError (the
remote's 4xx, or 502), never a crash. The remote is an httpx MockTransport."""
from __future__ import annotations

import json
import random
import time
from typing import Any, Callable

import httpx
import pytest

from libs.config.model import DatabaseConfig, FederationConfig
from libs.errors import MatrixError
from libs.events.builder import build_event
from libs.events.room_versions import get_room_version
from libs.events.server_keys import build_server_keys
from libs.events.signing import generate_signing_key
from libs.storage import open_database
from services.federationapi.client import FederationClient
from services.federationapi.keyring import DirectKeyFetcher, KeyRing, OwnKeys
from services.federationapi.perform import MembershipPerformer, federation_form
from services.federationapi.storage.store import MIGRATIONS, FederationStore

REMOTE = "127.0.0.1:1"
RKEY, US = generate_signing_key("r"), generate_signing_key("us")
V11 = get_room_version("11")
ROOM = f"!room:{REMOTE}"
BOB = "@bob:us.test"


def create_event() -> dict[str, Any]:
    ev = build_event(V11, type="m.room.create", sender=f"@a:{REMOTE}", room_id=ROOM, content={"room_version": "11"},
                     prev_events=[], auth_events=[], depth=1, origin_server_ts=int(time.time() * 1000),
                     server_name=REMOTE, signing_key=RKEY, state_key="")
    return federation_form(ev.pdu, V11)


class Roomserver:
    def __init__(self) -> None:
        self.joined: list[Any] = []

    async def join_remote_room(self, *a: Any) -> str:
        self.joined.append(a)
        return "$joined"


def remote(make_join: Callable[[], Any], send_join: Callable[[dict[str, Any]], Any]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/_matrix/key/v2/server"):
            body = build_server_keys(REMOTE, [RKEY], int(time.time() * 1000) + 3600_000)
            return httpx.Response(200, stream=httpx.ByteStream(json.dumps(body).encode()))
        if "/make_join/" in path:
            status, body = make_join()
        elif "/send_join/" in path:
            status, body = send_join(json.loads(request.read()))
        else:
            status, body = 404, {"errcode": "M_UNRECOGNIZED"}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, stream=httpx.ByteStream(raw), headers={"content-type": "application/json"})
    return httpx.MockTransport(handler)


@pytest.fixture
async def setup():
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=":memory:"), "federationapi", MIGRATIONS)
    clients: list[FederationClient] = []

    def make(transport: httpx.MockTransport) -> tuple[MembershipPerformer, Roomserver]:
        cfg = FederationConfig(enabled=True, block_private_addresses=False, max_retries=0, trusted_key_servers=[])
        client = FederationClient("us.test", US, cfg, transport=transport)
        clients.append(client)
        keyring = KeyRing(FederationStore(db), OwnKeys("us.test", [US]), [DirectKeyFetcher(client)])
        rs = Roomserver()
        return MembershipPerformer("us.test", US, client, keyring, rs), rs  # type: ignore[arg-type]

    try:
        yield make
    finally:
        for c in clients:
            await c.aclose()
        await db.close()


def template(**over: Any) -> dict[str, Any]:
    create = create_event()
    t = {"type": "m.room.member", "room_id": ROOM, "sender": BOB, "state_key": BOB,
         "content": {"membership": "join"}, "prev_events": ["$" + "a" * 43], "auth_events": [],
         "depth": 2, "origin_server_ts": 1}
    t.update(over)
    return {"room_version": "11", "event": t, "_create": create}


async def test_junk_answers_are_errors_not_crashes(setup):
    rng = random.Random(99)
    junk: list[Any] = [None, 0, "x", [], {}, [1], {"event": None}, {"event": []}, {"event": {}},
                       {"room_version": 5, "event": {}}, {"room_version": "99", "event": {}}, b"not json",
                       {"state": None, "auth_chain": None}, {"state": [1, "x", None], "auth_chain": [{}]},
                       {"state": [], "auth_chain": []}]
    good_t = template()
    cases: list[tuple[Any, Any]] = [
        ((200, j), (200, {})) for j in junk] + [
        ((200, good_t), (200, j)) for j in junk] + [
        ((403, {"errcode": "M_FORBIDDEN", "error": "no"}), (200, {})),
        ((400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "room_version": "42"}), (200, {})),
        ((500, {"errcode": "M_UNKNOWN"}), (200, {})),
        ((200, template(sender="@mallory:us.test")), (200, {})),
        ((200, template(depth="deep")), (200, {})),
        ((200, template(prev_events=[[1, 2]])), (200, {})),
        ((200, good_t), (403, {"errcode": "M_FORBIDDEN"})),
        ((200, good_t), (200, {"state": [good_t["_create"]], "auth_chain": [good_t["_create"]]})),
    ]
    for _ in range(20):  # random damage to a plausible answer
        t = template()
        ev = t["event"]
        ev[rng.choice(sorted(ev))] = rng.choice(junk[:10])
        cases.append(((200, t), (200, {"state": [t["_create"]], "auth_chain": []})))
    for mj, sj in cases:
        def make_join(mj: Any = mj) -> Any:
            status, body = mj
            return status, ({k: v for k, v in body.items() if k != "_create"} if isinstance(body, dict) else body)

        performer, rs = setup(remote(make_join, lambda pdu, sj=sj: sj))
        with pytest.raises(MatrixError) as ei:
            await performer.perform_join(ROOM, BOB, [REMOTE], {"membership": "join"})
        assert 400 <= ei.value.status < 600 and ei.value.status != 500, (mj, sj, ei.value)
        assert ei.value.errcode.startswith("M_")
        assert rs.joined == []


def good_room() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A small public room on REMOTE: (make_join template for BOB, its state events)."""
    now = int(time.time() * 1000)
    alice = f"@a:{REMOTE}"
    events: list[dict[str, Any]] = []
    ids: dict[str, str] = {}

    def add(name: str, type: str, content: dict[str, Any], auth: list[str], state_key: str = "") -> None:
        ev = build_event(V11, type=type, sender=alice, room_id=ROOM, content=content,
                         prev_events=[ids[list(ids)[-1]]] if ids else [], auth_events=[ids[a] for a in auth],
                         depth=len(events) + 1, origin_server_ts=now, server_name=REMOTE, signing_key=RKEY,
                         state_key=state_key)
        events.append(federation_form(ev.pdu, V11))
        ids[name] = ev.event_id

    add("create", "m.room.create", {"room_version": "11"}, [])
    add("alice", "m.room.member", {"membership": "join"}, ["create"], state_key=alice)
    add("pl", "m.room.power_levels", {"users": {alice: 100}}, ["create", "alice"])
    add("jr", "m.room.join_rules", {"join_rule": "public"}, ["create", "alice", "pl"])
    t = {"type": "m.room.member", "room_id": ROOM, "sender": BOB, "state_key": BOB,
         "content": {"membership": "join"}, "prev_events": [ids["jr"]],
         "auth_events": [ids["create"], ids["pl"], ids["jr"]], "depth": 5, "origin_server_ts": now}
    return t, events


async def test_a_good_answer_joins(setup):
    """The control: the same remote answering properly gets the room joined."""
    t, events = good_room()
    performer, rs = setup(remote(lambda: (200, {"room_version": "11", "event": t}),
                                 lambda pdu: (200, {"origin": REMOTE, "state": events, "auth_chain": events})))
    assert await performer.perform_join(ROOM, BOB, [REMOTE], {"membership": "join", "displayname": "Bob"}) == "$joined"
    (room_id, version, join_pdu, state, chain), = rs.joined
    assert (room_id, version) == (ROOM, "11") and len(state) == 4 and len(chain) == 4
    assert join_pdu["content"] == {"membership": "join", "displayname": "Bob"} and "us.test" in join_pdu["signatures"]


async def test_join_tries_the_next_server(setup):
    """A failing first server (the via): the join goes through the next one (the room's)."""
    t, events = good_room()
    good = remote(lambda: (200, {"room_version": "11", "event": t}),
                  lambda pdu: (200, {"origin": REMOTE, "state": events, "auth_chain": events}))
    asked: list[int | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.port)
        if request.url.port == 2 and "/make_join/" in request.url.path:
            return httpx.Response(400, stream=httpx.ByteStream(b'{"errcode":"M_UNABLE_TO_AUTHORISE_JOIN"}'))
        return good.handle_request(request)

    performer, rs = setup(httpx.MockTransport(handler))
    assert await performer.perform_join(ROOM, BOB, ["127.0.0.1:2"], {"membership": "join"}) == "$joined"
    assert asked[0] == 2 and 1 in asked and len(rs.joined) == 1
    # Every server refusing: the client gets a refusal, not a 502.
    bad = httpx.MockTransport(lambda request: httpx.Response(
        403, stream=httpx.ByteStream(b'{"errcode":"M_FORBIDDEN","error":"banned"}')))
    performer, rs = setup(bad)
    with pytest.raises(MatrixError) as ei:
        await performer.perform_join(ROOM, BOB, ["127.0.0.1:2"], {"membership": "join"})
    assert (ei.value.status, ei.value.errcode) == (403, "M_FORBIDDEN") and rs.joined == []
