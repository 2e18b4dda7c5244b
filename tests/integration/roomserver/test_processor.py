"""Room creation, sending, auth failures and idempotency through the input processor."""
from __future__ import annotations

import pytest

from libs.errors import MatrixError
from libs.events.auth import check_event_auth
from libs.events.event import Event
from libs.events.room_versions import get_room_version
from libs.events.signing import verify_event_signatures

from services.roomserver.api import CreateRoomRequest, NewEventRequest
from services.roomserver.create import random_room_id
from services.roomserver.input import RoomInputProcessor
from services.roomserver.storage.store import RoomserverStore

from .conftest import SERVER

A, B, C = f"@alice:{SERVER}", f"@bob:{SERVER}", f"@carol:{SERVER}"


async def _all_events(store: RoomserverStore, rid: str) -> list[Event]:
    row = await store.room_row(rid)
    rows = await store.db.fetch("SELECT event_id FROM events WHERE room_nid = $1 ORDER BY event_nid",
                                int(row["room_nid"]))
    evs = await store.get_event_rows([r[0] for r in rows])
    order = {r[0]: i for i, r in enumerate(rows)}
    return [Event(e.pdu, get_room_version(e.room_version), e.event_id)
            for e in sorted(evs, key=lambda e: order[e.event_id])]


def _check_chain(events: list[Event], signing_key) -> None:
    """Every event passes the full auth check against the auth events it cites,
    carries a valid signature, and points at the previous event."""
    by_id = {e.event_id: e for e in events}
    keys = {SERVER: {signing_key.key_id: signing_key.verify_key()}}
    for i, ev in enumerate(events):
        verify_event_signatures(ev.pdu, ev.room_version, keys)
        auth = [by_id[a] for a in ev.auth_event_ids]
        if ev.room_version.hydra and ev.type != "m.room.create":
            auth.append(events[0])
        check_event_auth(ev, auth)
        assert ev.depth == i + 1
        assert ev.prev_event_ids == ([] if i == 0 else [events[i - 1].event_id])


@pytest.mark.parametrize("preset", ["private_chat", "trusted_private_chat", "public_chat"])
@pytest.mark.parametrize("version", ["1", "6", "10", "11", "12"])
async def test_create_room_presets(processor: RoomInputProcessor, store: RoomserverStore, signing_key,
                                   preset: str, version: str) -> None:
    from services.roomserver.internal import RoomserverInternal

    req = CreateRoomRequest(creator=A, room_version=version, preset=preset, name="Room", topic="Topic",
                            invite=[B], is_direct=True, room_alias_name=f"r{version}{preset}")
    if version == "12":
        # The v12 create event is built by the caller (it defines the room ID).
        from libs.events.builder import build_event
        from services.roomserver.create import create_content
        rv = get_room_version("12")
        create = build_event(rv, type="m.room.create", sender=A, room_id=None, content=create_content(req, rv),
                             prev_events=[], auth_events=[], depth=1, origin_server_ts=1, server_name=SERVER,
                             signing_key=signing_key, state_key="")
        rid, pdu = create.room_id, create.pdu
        assert not rid.endswith(SERVER) and rid == "!" + create.event_id[1:]
    else:
        rid, pdu = random_room_id(SERVER), None
    await processor.create(req, rid, pdu)
    events = await _all_events(store, rid)
    _check_chain(events, signing_key)
    types = [(e.type, e.state_key) for e in events]
    expected = [("m.room.create", ""), ("m.room.member", A), ("m.room.power_levels", ""),
                ("m.room.canonical_alias", ""), ("m.room.join_rules", ""), ("m.room.history_visibility", "")]
    if preset != "public_chat":
        expected.append(("m.room.guest_access", ""))
    expected += [("m.room.name", ""), ("m.room.topic", ""), ("m.room.member", B)]
    assert types == expected
    create_ev = events[0]
    if version in ("1", "6", "10"):
        assert create_ev.content["creator"] == A
    else:
        assert "creator" not in create_ev.content
    pl = events[2].content
    if version == "12":
        assert pl["users"] == {}
        assert create_ev.content.get("additional_creators") == ([B] if preset == "trusted_private_chat" else None)
    else:
        assert pl["users"] == ({A: 100, B: 100} if preset == "trusted_private_chat" else {A: 100})
    assert events[-1].content == {"membership": "invite", "is_direct": True}
    assert await store.resolve_alias(f"#r{version}{preset}:{SERVER}") == rid
    # Membership table derived from state.
    assert (await store.membership(rid, B))[0] == "invite"
    assert await store.joined_members(rid) == [A]


async def test_send_and_auth_failures(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = random_room_id(SERVER)
    await processor.create(CreateRoomRequest(creator=A, room_version="11", preset="public_chat"), rid, None)
    eid = await processor.send(NewEventRequest(room_id=rid, type="m.room.message", sender=A, content={"body": "hi"}))
    row = await store.get_event_row(eid)
    assert row is not None and row.pdu["content"] == {"body": "hi"} and not row.rejected

    # Not joined.
    with pytest.raises(MatrixError) as ei:
        await processor.send(NewEventRequest(room_id=rid, type="m.room.message", sender=B, content={"body": "x"}))
    assert (ei.value.status, ei.value.errcode) == (403, "M_FORBIDDEN") and "not joined" in ei.value.error
    # Join (public room), then too-low power level for a PL-100 state event.
    await processor.send(NewEventRequest(room_id=rid, type="m.room.member", sender=B, state_key=B,
                                         content={"membership": "join"}))
    assert sorted(await store.joined_members(rid)) == [A, B]
    with pytest.raises(MatrixError) as ei:
        await processor.send(NewEventRequest(room_id=rid, type="m.room.power_levels", sender=B, state_key="",
                                             content={"users": {B: 100}}))
    assert ei.value.errcode == "M_FORBIDDEN"
    # Redacting someone else's event without the redact level.
    with pytest.raises(MatrixError) as ei:
        await processor.send(NewEventRequest(room_id=rid, type="m.room.redaction", sender=B, redacts=eid,
                                             content={}))
    assert ei.value.errcode == "M_FORBIDDEN"
    # ... but their own is fine.
    own = await processor.send(NewEventRequest(room_id=rid, type="m.room.message", sender=B, content={"body": "b"}))
    await processor.send(NewEventRequest(room_id=rid, type="m.room.redaction", sender=B, redacts=own, content={}))
    # Unknown room, bad content.
    with pytest.raises(MatrixError) as ei:
        await processor.send(NewEventRequest(room_id="!nope:x", type="m.room.message", sender=A, content={}))
    assert ei.value.errcode == "M_FORBIDDEN"
    with pytest.raises(MatrixError) as ei:
        await processor.send(NewEventRequest(room_id=rid, type="m.room.message", sender=A,
                                             content={"body": "x" * 70000}))
    assert ei.value.status in (400, 413)
    # Rejected local requests leave no trace in the room.
    room = await processor.room(rid)
    assert room is not None and len(room.extremities) == 1


async def test_idempotent_txn(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = random_room_id(SERVER)
    await processor.create(CreateRoomRequest(creator=A, room_version="11"), rid, None)
    req = NewEventRequest(room_id=rid, type="m.room.message", sender=A, content={"body": "once"},
                          device_id="DEV", txn_id="t1")
    e1 = await processor.send(req)
    e2 = await processor.send(req)
    assert e1 == e2
    other = await processor.send(NewEventRequest(room_id=rid, type="m.room.message", sender=A,
                                                 content={"body": "once"}, device_id="DEV2", txn_id="t1"))
    assert other != e1
    n = await store.db.fetchval("SELECT COUNT(*) FROM events WHERE json LIKE '%once%'")
    assert int(n) == 2


async def test_redelivered_request_gets_stored_result(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = random_room_id(SERVER)
    r1 = await processor.handle("create_room", {"room_id": rid, "request": {"creator": A, "room_version": "11"}},
                                "req-1")
    assert r1 == {"room_id": rid}
    body = {"room_id": rid, "type": "m.room.message", "sender": A, "content": {"body": "x"}}
    s1 = await processor.handle("new_event", body, "req-2")
    s2 = await processor.handle("new_event", body, "req-2")
    assert s1 == s2 and "event_id" in s1
    err = await processor.handle("new_event", {**body, "sender": B}, "req-3")
    assert err["error"]["errcode"] == "M_FORBIDDEN" and err["error"]["status"] == 403
    junk = await processor.handle("new_event", {"junk": 1}, None)
    assert junk["error"]["errcode"] == "M_BAD_JSON" and junk["error"]["status"] == 400
    assert (await processor.handle("bogus", {}, None))["error"]["errcode"] == "M_BAD_JSON"
    # Alias in use, unsupported version.
    r = await processor.handle("create_room", {"room_id": random_room_id(SERVER),
                                               "request": {"creator": A, "room_version": "99"}}, None)
    assert r["error"]["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    await processor.create(CreateRoomRequest(creator=A, room_version="11", room_alias_name="taken"),
                           random_room_id(SERVER), None)
    with pytest.raises(MatrixError) as ei:
        await processor.create(CreateRoomRequest(creator=A, room_version="11", room_alias_name="taken"),
                               random_room_id(SERVER), None)
    assert ei.value.errcode == "M_ROOM_IN_USE"


async def test_bad_power_level_override_fails_creation(processor: RoomInputProcessor, store: RoomserverStore) -> None:
    rid = random_room_id(SERVER)
    with pytest.raises(MatrixError) as ei:
        await processor.create(CreateRoomRequest(creator=A, room_version="11",
                                                 power_level_content_override={"users": {A: 0}},
                                                 name="needs 50"), rid, None)
    assert ei.value.errcode == "M_FORBIDDEN"
    assert await store.room_row(rid) is None
