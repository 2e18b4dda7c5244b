"""The roomserver's federation API through the service (input log, replies): the
membership handshakes between two servers (ours: the RoomserverService; the remote:
a second roomserver database), invites, and the read queries behind /state,
/state_ids, /event_auth, /get_missing_events, /backfill, /event."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from libs.config import DatabaseConfig, HomeserverConfig
from libs.errors import MatrixError
from libs.events.event import Event
from libs.events.hashes import compute_event_id
from libs.events.room_versions import get_room_version
from libs.events.signing import SigningKey, add_hashes_and_signature
from libs.log.api import EventLog
from libs.log.embedded import EmbeddedLog
from libs.storage import Database, open_database

from services.roomserver.api import TOPIC_OUTPUT, CreateRoomRequest, NewEventRequest
from services.roomserver.federation_reads import FederationReads
from services.roomserver.input import RoomInputProcessor
from services.roomserver.service import RoomserverService
from services.roomserver.storage.store import MIGRATIONS_PACKAGE, RoomserverStore

from .conftest import SERVER
from .fedhelpers import REMOTE, REMOTE_KEY, FakeRemote

V10 = get_room_version("10")
ALICE = f"@alice:{SERVER}"
CAROL = f"@carol:{SERVER}"
BOB = f"@bob:{REMOTE}"


@pytest.fixture
async def elog(tmp_path) -> AsyncIterator[EventLog]:
    lg = EmbeddedLog(str(tmp_path / "log.sqlite3"))
    await lg.start()
    yield lg
    await lg.stop()


@pytest.fixture
async def svc(db: Database, elog: EventLog, signing_key: SigningKey) -> AsyncIterator[RoomserverService]:
    s = RoomserverService(HomeserverConfig(server_name=SERVER), db, elog, signing_key=signing_key)
    await s.start()
    yield s
    await s.stop()


class RemoteServer:
    """The other side: its own roomserver database, driven directly."""

    def __init__(self, db: Database) -> None:
        self.store = RoomserverStore(db)
        self.proc = RoomInputProcessor(self.store, REMOTE, REMOTE_KEY)
        self.reads = FederationReads(self.store, REMOTE, REMOTE_KEY)


@pytest.fixture
async def remote(tmp_path) -> AsyncIterator[RemoteServer]:
    rdb = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path / "remote")), "roomserver",
                              MIGRATIONS_PACKAGE)
    yield RemoteServer(rdb)
    await rdb.close()


def sign_template(template: dict[str, Any], server: str, key: SigningKey) -> tuple[dict[str, Any], str]:
    pdu = add_hashes_and_signature(dict(template), V10, server, key)
    return pdu, compute_event_id(pdu, V10)


async def read_output(lg: EventLog, want: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    consumer = lg.consumer("reader", [TOPIC_OUTPUT])
    await consumer.start()
    out: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while len(out) < want and asyncio.get_running_loop().time() < deadline:
            out.extend(json.loads(r.value) for r in await consumer.getmany(timeout_ms=200))
    finally:
        await consumer.stop()
    return out


async def test_inbound_join_handshake(svc: RoomserverService) -> None:
    api = svc.api
    rid = await api.create_room(CreateRoomRequest(creator=ALICE, room_version="10", preset="public_chat"))
    with pytest.raises(MatrixError) as ei:
        await api.make_membership_event("!nope:test.local", BOB, "join")
    assert ei.value.errcode == "M_NOT_FOUND"
    with pytest.raises(MatrixError) as ei:
        await api.make_membership_event(rid, BOB, "join", ["1", "2"])
    assert ei.value.errcode == "M_INCOMPATIBLE_ROOM_VERSION" and ei.value.extra["room_version"] == "10"
    version, template = await api.make_membership_event(rid, BOB, "join", ["9", "10"])
    assert version == "10" and template["content"] == {"membership": "join"}
    assert template["prev_events"] and template["auth_events"] and "signatures" not in template
    join, join_id = sign_template(template, REMOTE, REMOTE_KEY)
    # A join of another server's user is refused.
    with pytest.raises(MatrixError) as ei:
        await api.receive_membership_pdu("evil.test", rid, join, "join")
    assert ei.value.status == 403
    with pytest.raises(MatrixError):
        await api.receive_membership_pdu(REMOTE, rid, join, "leave")
    resp = await api.receive_membership_pdu(REMOTE, rid, join, "join")
    types = {(p["type"], p.get("state_key")) for p in resp.state}
    assert ("m.room.create", "") in types and ("m.room.member", ALICE) in types
    assert ("m.room.member", BOB) not in types  # the state BEFORE the join
    assert {p["type"] for p in resp.auth_chain} >= {"m.room.create", "m.room.power_levels"}
    assert all("event_id" not in p for p in resp.state)
    assert (await api.get_membership(rid, BOB)).membership == "join"
    # The stored join is the PDU as sent (our reads serve it).
    got = await api.get_pdu(join_id)
    assert got is not None and got[0] == "10" and got[1]["signatures"] == join["signatures"]
    # The same join again is fine (already accepted).
    await api.receive_membership_pdu(REMOTE, rid, join, "join")
    # Leave handshake.
    _v, lt = await api.make_membership_event(rid, BOB, "leave")
    leave, _lid = sign_template(lt, REMOTE, REMOTE_KEY)
    await api.receive_membership_pdu(REMOTE, rid, leave, "leave")
    assert (await api.get_membership(rid, BOB)).membership == "leave"


async def test_make_join_refused_in_invite_only_room(svc: RoomserverService) -> None:
    rid = await svc.api.create_room(CreateRoomRequest(creator=ALICE, room_version="10", preset="private_chat"))
    with pytest.raises(MatrixError) as ei:
        await svc.api.make_membership_event(rid, BOB, "join")
    assert ei.value.errcode == "M_FORBIDDEN"
    await svc.api.send_event(NewEventRequest(room_id=rid, type="m.room.member", sender=ALICE, state_key=BOB,
                                             content={"membership": "invite"}))
    _v, t = await svc.api.make_membership_event(rid, BOB, "join")
    assert t["sender"] == BOB


async def test_outbound_join_of_a_remote_room(svc: RoomserverService, remote: RemoteServer, elog) -> None:
    api = svc.api
    # The remote server's room, with one message.
    rid = "!remote:remote.test"
    await remote.proc.create(CreateRoomRequest(creator=BOB, room_version="10", preset="public_chat",
                                               name="Remote room"), rid, None)
    await remote.proc.send(NewEventRequest(room_id=rid, type="m.room.message", sender=BOB, content={"body": "x"}))
    # make_join at the remote, signed by us, send_join at the remote.
    _v, template = await remote.reads.make_membership_event(rid, ALICE, "join", ["10"])
    join, join_id = sign_template(template, SERVER, svc.signing_key)
    eid, signed = await remote.reads.check_membership_pdu(SERVER, rid, join, "join")
    res = await remote.proc.federated.receive(SERVER, rid, [signed])
    assert res["results"] == {eid: None}
    resp = await remote.reads.get_state_and_auth_chain(rid, eid)
    # Our side: the room from the response.
    got = await api.join_remote_room(rid, "10", join, resp.state, resp.auth_chain)
    assert got == join_id
    assert await api.get_room_version(rid) == "10"
    assert (await api.get_membership(rid, ALICE)).membership == "join"
    assert sorted(await api.get_joined_members(rid)) == [ALICE, BOB]
    state = await api.get_current_state(rid)
    assert state[("m.room.name", "")]["content"] == {"name": "Remote room"}
    assert state[("m.room.member", ALICE)]["event_id"] == join_id
    out = await read_output(elog, 1)
    assert out[-1]["event"]["event_id"] == join_id
    assert set(out[-1]["state_added"]) == {e["event_id"] for e in state.values()}
    # Remote events now flow in, and we can send into the room.
    msg_id = await remote.proc.send(NewEventRequest(room_id=rid, type="m.room.message", sender=BOB,
                                                    content={"body": "welcome"}))
    pdu = (await remote.reads.get_pdu(msg_id))[1]
    r = await api.receive_federated_pdus(REMOTE, rid, [pdu])
    assert r.results == {msg_id: None}
    sent = await api.send_event(NewEventRequest(room_id=rid, type="m.room.message", sender=ALICE,
                                                content={"body": "thanks"}))
    ev = await api.get_event(sent.event_id)
    assert ev["prev_events"] == [msg_id]
    # ...and the remote accepts ours.
    ours = (await api.get_pdu(sent.event_id))[1]
    assert (await remote.proc.federated.receive(SERVER, rid, [ours]))["results"] == {sent.event_id: None}


async def test_invite_to_a_remote_room_then_join(svc: RoomserverService, remote: RemoteServer, elog) -> None:
    api = svc.api
    rid = "!inv:remote.test"
    await remote.proc.create(CreateRoomRequest(creator=BOB, room_version="10", preset="private_chat",
                                               name="Secret"), rid, None)
    fr = FakeRemote(remote.proc, rid)
    invite = await fr.event("m.room.member", BOB, {"membership": "invite"}, state_key=CAROL)
    stripped = [{"type": "m.room.name", "state_key": "", "sender": BOB, "content": {"name": "Secret"}}]
    await api.store_invite("10", invite.pdu, stripped)
    assert (await api.get_membership(rid, CAROL)).membership == "invite"
    assert [m.room_id for m in await api.get_rooms_for_user(CAROL, ("invite",))] == [rid]
    out = await read_output(elog, 1)
    assert out[-1]["event"]["event_id"] == invite.event_id
    assert out[-1]["event"]["unsigned"]["invite_room_state"] == stripped
    # PDUs of a room we only hold an invite for are refused.
    msg = await fr.message(BOB)
    r = await api.receive_federated_pdus(REMOTE, rid, [msg.pdu])
    assert r.results[msg.event_id] and "not in room" in r.results[msg.event_id]
    # The invite reaches the remote room, then carol joins through it.
    res = await remote.proc.federated.receive(SERVER, rid, [invite.pdu])
    assert res["results"][invite.event_id] is None or res["results"][invite.event_id] == "accepted"
    _v, template = await remote.reads.make_membership_event(rid, CAROL, "join")
    join, join_id = sign_template(template, SERVER, svc.signing_key)
    assert (await remote.proc.federated.receive(SERVER, rid, [join]))["results"] == {join_id: None}
    resp = await remote.reads.get_state_and_auth_chain(rid, join_id)
    assert await api.join_remote_room(rid, "10", join, resp.state, resp.auth_chain) == join_id
    assert (await api.get_membership(rid, CAROL)).membership == "join"


async def test_join_response_with_a_forged_state_event(svc: RoomserverService, remote: RemoteServer) -> None:
    rid = "!forged:remote.test"
    await remote.proc.create(CreateRoomRequest(creator=BOB, room_version="10", preset="public_chat"), rid, None)
    _v, template = await remote.reads.make_membership_event(rid, ALICE, "join")
    join, join_id = sign_template(template, SERVER, svc.signing_key)
    await remote.proc.federated.receive(SERVER, rid, [join])
    resp = await remote.reads.get_state_and_auth_chain(rid, join_id)
    # A topic by someone never in the room, slipped into the state.
    room = await remote.proc.room(rid)
    fr = FakeRemote(remote.proc, rid)
    forged = await fr.event("m.room.topic", "@mallory:remote.test", {"topic": "pwned"}, state_key="",
                            state={k: v[0] for k, v in room.state.items()})
    await api_join(svc, rid, join, [*resp.state, forged.pdu], resp.auth_chain)
    state = await svc.api.get_current_state(rid)
    assert ("m.room.topic", "") not in state
    assert await svc.api.get_pdu(forged.event_id) is None  # rejected: never served


async def api_join(svc: RoomserverService, rid: str, join: dict[str, Any], state: list[dict[str, Any]],
                   chain: list[dict[str, Any]]) -> str:
    return await svc.api.join_remote_room(rid, "10", join, state, chain)


async def test_read_queries(svc: RoomserverService) -> None:
    api = svc.api
    rid = await api.create_room(CreateRoomRequest(creator=ALICE, room_version="10", preset="public_chat"))
    ids = []
    for i in range(5):
        ids.append((await api.send_event(NewEventRequest(room_id=rid, type="m.room.message", sender=ALICE,
                                                         content={"body": str(i)}))).event_id)
    state_ids, chain_ids = await api.get_state_ids_and_auth_chain_ids(rid, ids[2])
    full = await api.get_state_and_auth_chain(rid, ids[2])
    assert sorted(state_ids) == sorted(compute_event_id(p, V10) for p in full.state)
    assert sorted(chain_ids) == sorted(compute_event_id(p, V10) for p in full.auth_chain)
    assert set(chain_ids) <= set(state_ids)  # a fresh room: every auth event is state
    with pytest.raises(MatrixError) as ei:
        await api.get_state_ids_and_auth_chain_ids("!other:test.local", ids[2])
    assert ei.value.errcode == "M_NOT_FOUND"
    # get_missing_events: between ids[0] (earliest) and ids[4] (latest).
    missing = await api.get_missing_events(rid, [ids[0]], [ids[4]], 10, 0)
    assert [compute_event_id(p, V10) for p in missing] == ids[1:4]
    assert len(await api.get_missing_events(rid, [ids[0]], [ids[4]], 2, 0)) == 2
    # backfill: from ids[4], newest first.
    back = await api.backfill(rid, [ids[4]], 3)
    assert [compute_event_id(p, V10) for p in back] == [ids[4], ids[3], ids[2]]
    # Auth chain of one event: create, power levels, alice's join (and their chains).
    chain = await api.get_auth_chain([ids[0]])
    assert {p["type"] for p in chain} == {"m.room.create", "m.room.power_levels", "m.room.member"}
    assert await api.get_pdu("$nope") is None
    ev = Event((await api.get_pdu(ids[1]))[1], V10)
    assert ev.event_id == ids[1]


async def test_invite_rejected_through_the_remote(svc: RoomserverService, remote: RemoteServer, elog) -> None:
    api = svc.api
    rid = "!rej:remote.test"
    await remote.proc.create(CreateRoomRequest(creator=BOB, room_version="10", preset="private_chat"), rid, None)
    invite = await FakeRemote(remote.proc, rid).event("m.room.member", BOB, {"membership": "invite"},
                                                      state_key=CAROL)
    await api.store_invite("10", invite.pdu, [])
    assert (await remote.proc.federated.receive(SERVER, rid, [invite.pdu]))["results"][invite.event_id] is None
    _v, template = await remote.reads.make_membership_event(rid, CAROL, "leave")
    leave, leave_id = sign_template(template, SERVER, svc.signing_key)
    assert (await remote.proc.federated.receive(SERVER, rid, [leave]))["results"] == {leave_id: None}
    await api.store_outlier_membership("10", leave, [])
    assert (await api.get_membership(rid, CAROL)).membership == "leave"
    out = await read_output(elog, 2)
    assert out[-1]["event"]["event_id"] == leave_id and out[-1]["state_added"] == [leave_id]
    with pytest.raises(MatrixError):
        await api.store_invite("10", leave, [])  # store_invite takes invites only


@pytest.mark.parametrize("version", ["1", "3", "12"])
async def test_inbound_join_and_message_in_other_room_versions(svc: RoomserverService, version: str) -> None:
    from libs.events.builder import build_event

    api = svc.api
    rv = get_room_version(version)
    rid = await api.create_room(CreateRoomRequest(creator=ALICE, room_version=version, preset="public_chat"))
    _v, template = await api.make_membership_event(rid, BOB, "join", [version])
    if rv.event_format.name == "V1":
        template = dict(template, event_id=f"$join1:{REMOTE}")
    join = add_hashes_and_signature(dict(template), rv, REMOTE, REMOTE_KEY)
    join_id = template["event_id"] if "event_id" in template else compute_event_id(join, rv)
    resp = await api.receive_membership_pdu(REMOTE, rid, join, "join")
    assert any(p["type"] == "m.room.create" for p in resp.state + resp.auth_chain) or rv.hydra
    assert (await api.get_membership(rid, BOB)).membership == "join"
    state = await api.get_current_state(rid)
    keys = [("m.room.power_levels", ""), ("m.room.member", BOB)] + ([] if rv.hydra else [("m.room.create", "")])
    auth = [state[k]["event_id"] for k in keys]
    refs: dict[str, dict[str, str]] = {}
    msg = build_event(rv, type="m.room.message", sender=BOB, room_id=rid, content={"body": "hi"},
                      prev_events=[join_id], auth_events=auth, depth=template["depth"] + 1,
                      origin_server_ts=template["origin_server_ts"] + 1, server_name=REMOTE, signing_key=REMOTE_KEY,
                      event_id=f"$msg1:{REMOTE}" if rv.event_format.name == "V1" else None,
                      reference_hashes=refs)
    r = await api.receive_federated_pdus(REMOTE, rid, [msg.pdu])
    assert r.results == {msg.event_id: None}
    assert (await api.get_event(msg.event_id))["content"] == {"body": "hi"}


async def test_restricted_join_is_authorised_by_a_local_user(svc: RoomserverService) -> None:
    api = svc.api
    space = await api.create_room(CreateRoomRequest(creator=ALICE, room_version="10", preset="public_chat"))
    _v, t = await api.make_membership_event(space, BOB, "join")
    await api.receive_membership_pdu(REMOTE, space, sign_template(t, REMOTE, REMOTE_KEY)[0], "join")
    rid = await api.create_room(CreateRoomRequest(creator=ALICE, room_version="10", preset="private_chat"))
    await api.send_event(NewEventRequest(room_id=rid, type="m.room.join_rules", sender=ALICE, state_key="",
                                         content={"join_rule": "restricted",
                                                  "allow": [{"type": "m.room_membership", "room_id": space}]}))
    with pytest.raises(MatrixError) as ei:
        await api.make_membership_event(rid, f"@dave:{REMOTE}", "join")
    assert ei.value.errcode == "M_UNABLE_TO_AUTHORISE_JOIN"
    _v, t = await api.make_membership_event(rid, BOB, "join")
    assert t["content"]["join_authorised_via_users_server"] == ALICE
    join, join_id = sign_template(t, REMOTE, REMOTE_KEY)
    await api.receive_membership_pdu(REMOTE, rid, join, "join")
    assert (await api.get_membership(rid, BOB)).membership == "join"
    stored = (await api.get_pdu(join_id))[1]
    assert set(stored["signatures"]) == {REMOTE, SERVER}  # ours added as the authorising server
