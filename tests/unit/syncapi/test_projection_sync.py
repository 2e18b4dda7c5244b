"""Projection and /sync behaviour on SQLite, driven with real signed events."""
from __future__ import annotations

import asyncio
import time

from services.syncapi.api import ClientDataRecord, ReceiptRecord, ToDeviceRecord, TypingRecord
from services.syncapi.filters import EventFilter, SyncFilter
from services.syncapi.history import History
from services.syncapi.streams import parse_token
from services.syncapi.sync import SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, Harness

A, B, C = "@alice:test.local", "@bob:test.local", "@carol:test.local"


async def feed(h: Harness, *recs) -> None:
    for r in recs:
        await h.projector.on_output(r)


async def make_room(h: Harness, rid: str = "!r:test.local", members: tuple[str, ...] = (B,)) -> FakeRoom:
    room = FakeRoom(rid)
    await feed(h, *room.create(A))
    for m in members:
        await feed(h, room.join(m))
    return room


async def sync(h: Harness, user: str, since: str | None = None, **kw) -> dict:
    resp, _ = await h.engine.build(SyncRequest(user, kw.pop("device", "DEV"),
                                               since=parse_token(since) if since else None, **kw))
    return resp


def bodies(events: list[dict]) -> list[str]:
    return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]


async def test_redelivered_record_changes_nothing(h: Harness) -> None:
    room = await make_room(h)
    rec = room.msg(A, "hello")
    assert await h.projector.on_output(rec) is True
    pos = h.positions.events
    assert await h.projector.on_output(rec) is False
    assert h.positions.events == pos
    assert (await h.store.positions())["events"] == pos
    resp = await sync(h, B)
    assert bodies(resp["rooms"]["join"][room.room_id]["timeline"]["events"]) == ["hello"]


async def test_rejected_and_soft_failed_never_in_timeline(h: Harness) -> None:
    room = await make_room(h)
    soft = room.output(room.make("m.room.message", A, {"msgtype": "m.text", "body": "soft"}), soft_failed=True)
    await h.projector.on_output(soft)
    rej = room.msg(A, "rejected")
    rej.rejected = True
    await h.projector.on_output(rej)
    await feed(h, room.msg(A, "ok"))
    tl = (await sync(h, B))["rooms"]["join"][room.room_id]["timeline"]["events"]
    assert bodies(tl) == ["ok"]


async def test_initial_sync_state_and_summary(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, *(room.msg(A, f"m{i}") for i in range(15)))
    resp = await sync(h, B)
    jr = resp["rooms"]["join"][room.room_id]
    assert bodies(jr["timeline"]["events"]) == [f"m{i}" for i in range(5, 15)]
    assert jr["timeline"]["limited"] is True
    types = {(e["type"], e["state_key"]) for e in jr["state"]["events"]}
    assert ("m.room.create", "") in types and ("m.room.member", B) in types
    assert all("auth_events" not in e and "signatures" not in e for e in jr["timeline"]["events"])
    assert jr["summary"] == {"m.heroes": [A], "m.joined_member_count": 2, "m.invited_member_count": 0}
    assert resp["device_one_time_keys_count"] == {}
    assert jr["unread_notifications"]["notification_count"] == 15


async def test_transaction_id_only_for_sending_device(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, room.msg(A, "x", device_id="ADEV", txn_id="txn1"))
    mine = (await sync(h, A, device="ADEV"))["rooms"]["join"][room.room_id]["timeline"]["events"][-1]
    other = (await sync(h, A, device="OTHER"))["rooms"]["join"][room.room_id]["timeline"]["events"][-1]
    assert mine["unsigned"]["transaction_id"] == "txn1"
    assert "transaction_id" not in other.get("unsigned", {})


async def test_incremental_limited_then_paginate_without_gaps(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, *(room.msg(A, f"a{i}") for i in range(7)))
    first = await sync(h, B)
    await feed(h, room.send("m.room.topic", A, {"topic": "t1"}, ""))
    await feed(h, *(room.msg(A, f"b{i}") for i in range(23)))
    flt = SyncFilter.parse({"room": {"timeline": {"limit": 5}}})
    inc = await sync(h, B, first["next_batch"], filter=flt)
    jr = inc["rooms"]["join"][room.room_id]
    assert jr["timeline"]["limited"] is True
    assert bodies(jr["timeline"]["events"]) == [f"b{i}" for i in range(18, 23)]
    # The topic changed between since and the timeline start: it is in state.
    assert [e["content"] for e in jr["state"]["events"] if e["type"] == "m.room.topic"] == [{"topic": "t1"}]
    # Walk back from prev_batch: every event exactly once, in order, down to the initial sync's.
    hist = History(h.store, h.positions)
    seen: list[str] = [e["event_id"] for e in jr["timeline"]["events"]]
    token = jr["timeline"]["prev_batch"]
    for _ in range(20):
        page = await hist.messages(room.room_id, B, "DEV", from_=token, to=None, dir_="b", limit=4,
                                   flt=EventFilter())
        seen[:0] = [e["event_id"] for e in reversed(page["chunk"])]
        if "end" not in page:
            break
        token = page["end"]
    expected = [eid for eid in room.last]
    assert seen == expected
    assert len(set(seen)) == len(seen)
    # Forward pagination from the initial sync's token gives everything after it.
    fwd = await hist.messages(room.room_id, B, "DEV", from_=first["next_batch"], to=None, dir_="f",
                              limit=100, flt=EventFilter())
    assert [e["event_id"] for e in fwd["chunk"]] == room.last[-24:]
    # `end` even at the present (as Synapse); the page after it is empty and has none.
    after = await hist.messages(room.room_id, B, "DEV", from_=fwd["end"], to=None, dir_="f",
                                limit=100, flt=EventFilter())
    assert after["chunk"] == [] and "end" not in after


async def test_incremental_without_changes_is_empty(h: Harness) -> None:
    room = await make_room(h)
    first = await sync(h, B)
    resp, has = await h.engine.build(SyncRequest(B, "DEV", since=parse_token(first["next_batch"])))
    assert has is False and resp["rooms"]["join"] == {}
    assert resp["next_batch"] == first["next_batch"]
    await feed(h, room.msg(A, "later"))
    resp, has = await h.engine.build(SyncRequest(B, "DEV", since=parse_token(first["next_batch"])))
    assert has and bodies(resp["rooms"]["join"][room.room_id]["timeline"]["events"]) == ["later"]
    assert resp["rooms"]["join"][room.room_id]["state"]["events"] == []


async def test_long_poll_wakes_within_milliseconds(h: Harness) -> None:
    room = await make_room(h)
    first = await sync(h, B)
    task = asyncio.create_task(h.engine.sync(SyncRequest(B, "DEV", since=parse_token(first["next_batch"]),
                                                         timeout_ms=10_000)))
    await asyncio.sleep(0.05)
    assert not task.done()
    t0 = time.perf_counter()
    await feed(h, room.msg(A, "wake"))
    resp = await asyncio.wait_for(task, 2)
    elapsed = time.perf_counter() - t0
    assert bodies(resp["rooms"]["join"][room.room_id]["timeline"]["events"]) == ["wake"]
    assert elapsed < 0.25, elapsed
    assert h.notifier.listener_count() == 0


async def test_long_poll_times_out_empty(h: Harness) -> None:
    await make_room(h)
    first = await sync(h, B)
    t0 = time.perf_counter()
    resp = await h.engine.sync(SyncRequest(B, "DEV", since=parse_token(first["next_batch"]), timeout_ms=100))
    assert 0.09 < time.perf_counter() - t0 < 1.0
    assert resp["rooms"]["join"] == {}


async def test_long_poll_woken_by_invite(h: Harness) -> None:
    room = await make_room(h)
    first = await sync(h, C)
    task = asyncio.create_task(h.engine.sync(SyncRequest(C, "DEV", since=parse_token(first["next_batch"]),
                                                         timeout_ms=10_000)))
    await asyncio.sleep(0.02)
    await feed(h, room.send("m.room.member", A, {"membership": "invite"}, C))
    resp = await asyncio.wait_for(task, 2)
    inv = resp["rooms"]["invite"][room.room_id]["invite_state"]["events"]
    types = {e["type"] for e in inv}
    assert {"m.room.create", "m.room.join_rules", "m.room.member"} <= types
    assert any(e["type"] == "m.room.member" and e["state_key"] == C and e["content"]["membership"] == "invite"
               for e in inv)


async def test_typing_receipts_private_and_threaded(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, room.msg(A, "m"))
    eid = room.last[-1]
    first = await sync(h, B)
    h.projector.on_typing(TypingRecord(room.room_id, A, True, 30000))
    await h.projector.on_receipt(ReceiptRecord(room.room_id, A, "m.read", eid, 111))
    await h.projector.on_receipt(ReceiptRecord(room.room_id, B, "m.read.private", eid, 222))
    await h.projector.on_receipt(ReceiptRecord(room.room_id, A, "m.read", eid, 333, thread_id="$thread"))
    # Same receipt again: no new position.
    rpos = h.positions.receipts
    assert await h.projector.on_receipt(ReceiptRecord(room.room_id, A, "m.read", eid, 111)) is False
    assert h.positions.receipts == rpos
    eph_b = (await sync(h, B, first["next_batch"]))["rooms"]["join"][room.room_id]["ephemeral"]["events"]
    eph_a = (await sync(h, A, first["next_batch"]))["rooms"]["join"][room.room_id]["ephemeral"]["events"]
    typing = [e for e in eph_b if e["type"] == "m.typing"]
    assert typing == [{"type": "m.typing", "content": {"user_ids": [A]}}]
    rb = [e for e in eph_b if e["type"] == "m.receipt"][0]["content"][eid]
    ra = [e for e in eph_a if e["type"] == "m.receipt"][0]["content"][eid]
    assert rb["m.read.private"] == {B: {"ts": 222}}
    assert "m.read.private" not in ra
    assert ra["m.read"][A] in ({"ts": 111}, {"ts": 333, "thread_id": "$thread"})
    # Bob's private receipt clears his unread count.
    full = await sync(h, B)
    assert full["rooms"]["join"][room.room_id]["unread_notifications"]["notification_count"] == 0
    # Typing expires.
    tok = (await sync(h, B))["next_batch"]
    h.clock[0] += 31_000
    h.projector.expire_typing()
    eph = (await sync(h, B, tok))["rooms"]["join"][room.room_id]["ephemeral"]["events"]
    assert {"type": "m.typing", "content": {"user_ids": []}} in eph


async def test_to_device_delivered_then_deleted(h: Harness) -> None:
    h.userapi.devices[B] = ["D1", "D2"]
    first = await sync(h, B, device="D1")
    rec = ToDeviceRecord(A, "m.test", B, "*", {"n": 1}, "msg1")
    assert await h.projector.on_to_device(rec) == 2
    assert await h.projector.on_to_device(rec) == 0  # redelivery
    r1 = await sync(h, B, first["next_batch"], device="D1")
    assert r1["to_device"]["events"] == [{"sender": A, "type": "m.test", "content": {"n": 1}}]
    again = await sync(h, B, first["next_batch"], device="D1")
    assert len(again["to_device"]["events"]) == 1  # not acknowledged yet
    r2 = await sync(h, B, r1["next_batch"], device="D1")
    assert r2["to_device"]["events"] == []
    left = await h.store.to_device_messages(B, "D1", 0, 10**9, 10)
    assert left == []
    assert len(await h.store.to_device_messages(B, "D2", 0, 10**9, 10)) == 1


async def test_account_data_global_and_room(h: Harness) -> None:
    room = await make_room(h)
    first = await sync(h, B)
    h.userapi.account_data[(B, "", "m.direct")] = {"x": 1}
    h.userapi.account_data[(B, room.room_id, "m.tag")] = {"tags": {"u.work": {}}}
    assert await h.projector.on_client_data(ClientDataRecord(B, "", "m.direct"))
    assert not await h.projector.on_client_data(ClientDataRecord(B, "", "m.direct"))
    await h.projector.on_client_data(ClientDataRecord(B, room.room_id, "m.tag"))
    resp = await sync(h, B, first["next_batch"])
    assert resp["account_data"]["events"] == [{"type": "m.direct", "content": {"x": 1}}]
    assert resp["rooms"]["join"][room.room_id]["account_data"]["events"] == [
        {"type": "m.tag", "content": {"tags": {"u.work": {}}}}]


async def test_leave_and_ban_sections(h: Harness) -> None:
    room = await make_room(h, members=(B, C))
    await feed(h, room.msg(A, "before"))
    tok_b = (await sync(h, B))["next_batch"]
    await feed(h, room.send("m.room.member", B, {"membership": "leave"}, B))
    await feed(h, room.msg(A, "after-leave"))
    resp = await sync(h, B, tok_b)
    lr = resp["rooms"]["leave"][room.room_id]
    assert [e["content"].get("membership") for e in lr["timeline"]["events"]] == ["leave"]
    assert room.room_id not in resp["rooms"]["join"]
    assert "after-leave" not in bodies(lr["timeline"]["events"])
    # Initial sync shows left rooms only with include_leave.
    assert room.room_id not in (await sync(h, B))["rooms"]["leave"]
    inc = await sync(h, B, filter=SyncFilter.parse({"room": {"include_leave": True}}))
    assert room.room_id in inc["rooms"]["leave"]
    tok_c = (await sync(h, C))["next_batch"]
    await feed(h, room.send("m.room.member", A, {"membership": "ban"}, C))
    assert room.room_id in (await sync(h, C, tok_c))["rooms"]["leave"]


async def test_history_visibility_joined_and_left(h: Harness) -> None:
    room = await make_room(h, members=())
    await feed(h, room.send("m.room.history_visibility", A, {"history_visibility": "joined"}, ""))
    await feed(h, room.msg(A, "secret-before-join"))
    await feed(h, room.join(B))
    await feed(h, room.msg(A, "visible"))
    await feed(h, room.send("m.room.member", B, {"membership": "leave"}, B))
    await feed(h, room.msg(A, "secret-after-leave"))
    hist = History(h.store, h.positions)
    page = await hist.messages(room.room_id, B, None, from_=None, to=None, dir_="b", limit=50, flt=EventFilter())
    got = bodies(list(reversed(page["chunk"])))
    assert got == ["visible"]
    # Shared visibility: a later joiner sees earlier history while joined.
    room2 = await make_room(h, "!r2:test.local", members=())
    await feed(h, room2.msg(A, "old-shared"))
    await feed(h, room2.join(C))
    page = await hist.messages(room2.room_id, C, None, from_=None, to=None, dir_="b", limit=50,
                               flt=EventFilter())
    assert "old-shared" in bodies(page["chunk"])
    # A user never in the room gets 403.
    from libs.errors import MatrixError
    try:
        await hist.messages(room2.room_id, "@eve:test.local", None, from_=None, to=None, dir_="b", limit=5,
                            flt=EventFilter())
        raise AssertionError("expected 403")
    except MatrixError as e:
        assert e.status == 403 and e.errcode == "M_FORBIDDEN"


async def test_redaction_applied_in_either_order(h: Harness) -> None:
    room = await make_room(h)
    target = room.msg(A, "rude")
    red = room.send("m.room.redaction", A, {}, redacts=target.event["event_id"])
    # Redaction first, target second.
    await feed(h, red, target)
    tl = (await sync(h, B))["rooms"]["join"][room.room_id]["timeline"]["events"]
    ev = [e for e in tl if e["event_id"] == target.event["event_id"]][0]
    assert ev["content"] == {}
    assert ev["unsigned"]["redacted_because"]["event_id"] == red.event["event_id"]
    t2 = room.msg(A, "oops")
    await feed(h, t2)
    await feed(h, room.send("m.room.redaction", A, {"reason": "x"}, redacts=t2.event["event_id"]))
    hist = History(h.store, h.positions)
    page = await hist.messages(room.room_id, B, None, from_=None, to=None, dir_="b", limit=3, flt=EventFilter())
    ev2 = [e for e in page["chunk"] if e["event_id"] == t2.event["event_id"]][0]
    assert ev2["content"] == {} and "redacted_because" in ev2["unsigned"]
    assert ev2["unsigned"]["redacted_by"] == ev2["unsigned"]["redacted_because"]["event_id"]


async def test_prev_content_on_state_changes(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, room.send("m.room.name", A, {"name": "one"}, ""))
    await feed(h, room.send("m.room.name", A, {"name": "two"}, ""))
    tl = (await sync(h, B))["rooms"]["join"][room.room_id]["timeline"]["events"]
    names = [e for e in tl if e["type"] == "m.room.name"]
    assert names[-1]["unsigned"]["prev_content"] == {"name": "one"}
    assert "prev_content" not in names[0].get("unsigned", {})


async def test_lazy_loading_members(h: Harness) -> None:
    room = await make_room(h, members=(B, C, "@d:test.local", "@e:test.local"))
    await feed(h, *(room.msg(C, f"c{i}") for i in range(3)))
    flt = SyncFilter.parse({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}})
    jr = (await sync(h, B, filter=flt))["rooms"]["join"][room.room_id]
    members = {e["state_key"] for e in jr["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {C, B}
    assert any(e["type"] == "m.room.create" for e in jr["state"]["events"])
    hist = History(h.store, h.positions)
    page = await hist.messages(room.room_id, B, None, from_=None, to=None, dir_="b", limit=3,
                               flt=EventFilter.parse({"lazy_load_members": True}))
    assert {e["state_key"] for e in page["state"]} == {C}


async def test_missing_state_fetched_from_roomserver(h: Harness) -> None:
    # We join a room whose earlier state we never saw on the output.
    room = FakeRoom("!remote:test.local")
    hidden = room.create(A)  # the roomserver has these; the syncapi never got them
    for rec in hidden:
        h.roomserver.events[rec.event["event_id"]] = rec.event
    join = room.join(B)
    join.state_added = list(room.state.values())
    await feed(h, join)
    assert h.roomserver.calls == 1
    st = (await sync(h, B))["rooms"]["join"][room.room_id]["state"]["events"]
    assert ("m.room.create", "") in {(e["type"], e["state_key"]) for e in st}


async def test_filters_types_and_not_rooms(h: Harness) -> None:
    room = await make_room(h)
    room2 = await make_room(h, "!other:test.local")
    await feed(h, room.msg(A, "m"), room.send("m.custom", A, {"k": 1}))
    flt = SyncFilter.parse({"room": {"not_rooms": [room2.room_id], "timeline": {"types": ["m.room.*"]}}})
    resp = await sync(h, B, filter=flt)
    assert room2.room_id not in resp["rooms"]["join"]
    types = {e["type"] for e in resp["rooms"]["join"][room.room_id]["timeline"]["events"]}
    assert "m.custom" not in types and "m.room.message" in types


async def test_context_around_event(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, *(room.msg(A, f"c{i}") for i in range(10)))
    mid = room.last[-5]
    hist = History(h.store, h.positions)
    ctx = await hist.context(room.room_id, mid, B, None, limit=4, flt=EventFilter())
    assert ctx["event"]["event_id"] == mid
    assert bodies(ctx["events_before"]) == ["c4", "c3"]
    assert bodies(ctx["events_after"]) == ["c6", "c7"]
    assert any(e["type"] == "m.room.create" for e in ctx["state"])
    back = await hist.messages(room.room_id, B, None, from_=ctx["start"], to=None, dir_="b", limit=1,
                               flt=EventFilter())
    assert bodies(back["chunk"]) == ["c2"]
    fwd = await hist.messages(room.room_id, B, None, from_=ctx["end"], to=None, dir_="f", limit=1,
                              flt=EventFilter())
    assert bodies(fwd["chunk"]) == ["c8"]


async def test_members_and_joined_members(h: Harness) -> None:
    room = await make_room(h, members=(B, C))
    await feed(h, room.send("m.room.member", A, {"membership": "invite"}, "@d:test.local"))
    hist = History(h.store, h.positions)
    all_m = await hist.members(room.room_id, B, at=None, membership=None, not_membership=None)
    assert len(all_m["chunk"]) == 4
    joined = await hist.members(room.room_id, B, at=None, membership="join", not_membership=None)
    assert {e["state_key"] for e in joined["chunk"]} == {A, B, C}
    jm = await hist.joined_members(room.room_id, B)
    assert set(jm["joined"]) == {A, B, C}


async def test_newly_joined_room_gets_full_state_but_profile_change_does_not(h: Harness) -> None:
    room = await make_room(h, members=())
    await feed(h, room.msg(A, "before"))
    tok = (await sync(h, B))["next_batch"]
    await feed(h, room.join(B))
    jr = (await sync(h, B, tok))["rooms"]["join"][room.room_id]
    # The whole room as in an initial sync: this small room's history fits the timeline
    # (so state, what precedes it, is empty) and starts at the create event.
    assert jr["timeline"]["events"][0]["type"] == "m.room.create" and jr["state"]["events"] == []
    assert "summary" in jr
    tok = (await sync(h, B))["next_batch"]
    await feed(h, room.send("m.room.member", B, {"membership": "join", "displayname": "Bob"}, B))
    jr = (await sync(h, B, tok))["rooms"]["join"][room.room_id]
    assert jr["state"]["events"] == []
    assert [e["content"].get("displayname") for e in jr["timeline"]["events"]] == ["Bob"]
    assert jr["timeline"]["events"][0]["unsigned"]["prev_content"] == {"membership": "join"}


async def test_full_state_returns_every_joined_room(h: Harness) -> None:
    room = await make_room(h)
    tok = (await sync(h, B))["next_batch"]
    resp, _ = await h.engine.build(SyncRequest(B, "DEV", since=parse_token(tok), full_state=True))
    jr = resp["rooms"]["join"][room.room_id]
    assert jr["timeline"]["events"] == []
    assert ("m.room.create", "") in {(e["type"], e.get("state_key")) for e in jr["state"]["events"]}


async def test_event_fields_filter(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, room.msg(A, "only body"))
    flt = SyncFilter.parse({"event_fields": ["type", "content.body"], "room": {"timeline": {"limit": 1}}})
    ev = (await sync(h, B, filter=flt))["rooms"]["join"][room.room_id]["timeline"]["events"][0]
    assert ev == {"type": "m.room.message", "content": {"body": "only body"}}


def test_apply_event_fields_escapes() -> None:
    from services.syncapi.filters import apply_event_fields
    ev = {"content": {"a.b": 1, "a": {"b": 2}}, "type": "t"}
    assert apply_event_fields(ev, ["content.a\\.b"]) == {"content": {"a.b": 1}}
    assert apply_event_fields(ev, ["content.a.b", "missing.x"]) == {"content": {"a": {"b": 2}}}


async def test_device_lists_changed_and_left(h: Harness) -> None:
    from services.syncapi.api import KeyChangeRecord
    room = await make_room(h)
    tok = (await sync(h, B))["next_batch"]
    await h.projector.on_key_change(KeyChangeRecord(A))
    await h.projector.on_key_change(KeyChangeRecord("@stranger:test.local"))
    resp = await sync(h, B, tok)
    assert resp["device_lists"] == {"changed": [A], "left": []}
    tok = resp["next_batch"]
    await feed(h, room.join(C))
    resp = await sync(h, B, tok)
    assert resp["device_lists"]["changed"] == [C]
    tok = resp["next_batch"]
    await feed(h, room.send("m.room.member", C, {"membership": "leave"}, C))
    resp = await sync(h, B, tok)
    assert resp["device_lists"] == {"changed": [], "left": [C]}
    # Long-poll woken by a key change of someone sharing a room.
    tok = resp["next_batch"]
    task = asyncio.create_task(h.engine.sync(SyncRequest(B, "DEV", since=parse_token(tok), timeout_ms=5000)))
    await asyncio.sleep(0.02)
    await h.projector.on_key_change(KeyChangeRecord(A))
    resp = await asyncio.wait_for(task, 2)
    assert resp["device_lists"]["changed"] == [A]


async def test_ignored_users_hidden(h: Harness) -> None:
    room = await make_room(h, members=(B, C))
    h.userapi.account_data[(B, "", "m.ignored_user_list")] = {"ignored_users": {C: {}}}
    await h.projector.on_client_data(ClientDataRecord(B, "", "m.ignored_user_list"))
    await feed(h, room.msg(C, "noise"), room.msg(A, "signal"))
    room2 = FakeRoom("!inv:test.local")
    await feed(h, *room2.create(C))
    await feed(h, room2.send("m.room.member", C, {"membership": "invite"}, B))
    resp = await sync(h, B)
    assert bodies(resp["rooms"]["join"][room.room_id]["timeline"]["events"]) == ["signal"]
    assert room2.room_id not in resp["rooms"]["invite"]
    page = await History(h.store, h.positions).messages(room.room_id, B, None, from_=None, to=None, dir_="b",
                                                        limit=10, flt=EventFilter())
    assert "noise" not in bodies(page["chunk"]) and "signal" in bodies(page["chunk"])


async def test_knock_section_and_carried_invite_state(h: Harness) -> None:
    room = FakeRoom("!k:test.local")
    await feed(h, *room.create(A))
    await feed(h, room.send("m.room.join_rules", A, {"join_rule": "knock"}, ""))
    tok = (await sync(h, C))["next_batch"]
    await feed(h, room.send("m.room.member", C, {"membership": "knock"}, C))
    resp = await sync(h, C, tok)
    ks = resp["rooms"]["knock"][room.room_id]["knock_state"]["events"]
    assert any(e["type"] == "m.room.join_rules" and e["content"]["join_rule"] == "knock" for e in ks)
    assert [e["content"]["membership"] for e in ks if e["type"] == "m.room.member"] == ["knock"]
    # An invite carrying its own stripped state (e.g. from federation) uses it as is.
    room2 = FakeRoom("!far:test.local")
    await feed(h, *room2.create(A))
    pdu = room2.make("m.room.member", A, {"membership": "invite"}, B)
    pdu["unsigned"] = {"invite_room_state": [{"type": "m.room.name", "state_key": "", "sender": A,
                                              "content": {"name": "Far"}}]}
    await feed(h, room2.output(pdu))
    inv = (await sync(h, B))["rooms"]["invite"][room2.room_id]["invite_state"]["events"]
    assert [e["type"] for e in inv] == ["m.room.name", "m.room.member"]
    assert "invite_room_state" not in inv[-1].get("unsigned", {})


async def test_state_changes_carried_by_no_timeline_event_reach_incremental_sync(h: Harness) -> None:
    room = await make_room(h)
    tok = (await sync(h, B))["next_batch"]
    # A message whose output also changes the topic (as a state resolution would).
    topic = room.make("m.room.topic", A, {"topic": "resolved"}, "")
    h.roomserver.events[topic["event_id"]] = topic
    room.state[("m.room.topic", "")] = topic["event_id"]
    rec = room.msg(A, "merge")
    rec.state_added = [topic["event_id"]]
    await feed(h, rec)
    jr = (await sync(h, B, tok))["rooms"]["join"][room.room_id]
    assert bodies(jr["timeline"]["events"]) == ["merge"] and jr["timeline"]["limited"] is False
    assert [e["content"] for e in jr["state"]["events"] if e["type"] == "m.room.topic"] == [{"topic": "resolved"}]


async def test_receipts_never_move_backwards_on_redelivery(h: Harness) -> None:
    room = await make_room(h)
    await feed(h, room.msg(A, "one"), room.msg(A, "two"))
    old, new = room.last[-2], room.last[-1]
    assert await h.projector.on_receipt(ReceiptRecord(room.room_id, B, "m.read", old, 1))
    assert await h.projector.on_receipt(ReceiptRecord(room.room_id, B, "m.read", new, 2))
    assert not await h.projector.on_receipt(ReceiptRecord(room.room_id, B, "m.read", old, 1))
    eph = (await sync(h, A))["rooms"]["join"][room.room_id]["ephemeral"]["events"]
    content = [e for e in eph if e["type"] == "m.receipt"][0]["content"]
    assert B in content[new]["m.read"] and old not in content
