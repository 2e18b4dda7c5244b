"""Federated input through the room's worker (`RoomInputProcessor.federated`):
accept, dedupe, forks, soft-fail, rejections, missing prev_events, hostile PDUs.
Runs on SQLite and PostgreSQL (the `processor` fixture)."""
from __future__ import annotations

from typing import Any

from libs.events.builder import build_event

from services.roomserver.api import NewEventRequest
from services.roomserver.input import RoomInputProcessor

from .fedhelpers import OTHER, OTHER_KEY, REMOTE, FakeRemote, make_room, receive

ROOM = "!fed:test.local"
ALICE = "@alice:test.local"
BOB = "@bob:remote.test"
CAROL = "@carol:other.test"


async def setup(processor: RoomInputProcessor, **kw: Any) -> FakeRemote:
    await make_room(processor, ROOM, **kw)
    return FakeRemote(processor, ROOM)


async def joined_bob(processor: RoomInputProcessor) -> FakeRemote:
    remote = await setup(processor)
    j = await remote.join(BOB)
    res = await receive(processor, REMOTE, ROOM, j)
    assert res["results"] == {j.event_id: None}, res
    return remote


async def test_remote_join_and_message_are_accepted(processor: RoomInputProcessor, store) -> None:
    remote = await setup(processor)
    j = await remote.join(BOB)
    state = {k: v[0] for k, v in (await processor.room(ROOM)).state.items()}
    m = await remote.message(BOB, prev=[j.event_id], state={**state, ("m.room.member", BOB): j.event_id},
                             depth=j.depth + 1)
    # Given out of order: processed by depth.
    res = await receive(processor, REMOTE, ROOM, m, j)
    assert res == {"results": {m.event_id: None, j.event_id: None}, "soft_failed": []}
    assert await store.membership(ROOM, BOB) == ("join", j.event_id)
    room = await processor.room(ROOM)
    assert list(room.extremities) == [m.event_id]
    assert room.state[("m.room.member", BOB)][0] == j.event_id
    row = await store.get_event_row(m.event_id)
    assert not row.rejected and not row.soft_failed and row.before_snapshot_nid == row.after_snapshot_nid
    # Redelivery: accepted again, nothing new stored.
    res = await receive(processor, REMOTE, ROOM, m)
    assert res["results"] == {m.event_id: None}
    # The database view (a fresh processor) agrees with the cache.
    fresh = RoomInputProcessor(store, "test.local", processor.signing_key)
    room2 = await fresh.room(ROOM)
    assert room2.state == room.state and set(room2.extremities) == {m.event_id}
    # A local event builds on the remote one.
    eid = await processor.send(NewEventRequest(room_id=ROOM, type="m.room.message", sender=ALICE,
                                               content={"body": "hi bob"}))
    ev = await processor._event(eid)
    assert ev.prev_event_ids == [m.event_id]


async def test_outputs_of_accepted_events(processor: RoomInputProcessor, store) -> None:
    sent: list[Any] = []
    processor.on_committed = sent.extend
    remote = await joined_bob(processor)
    import json

    records = [json.loads(r[3]) for r in sent]
    assert records[-1]["event"]["sender"] == BOB and records[-1]["state_added"] == [records[-1]["event"]["event_id"]]
    m = await remote.message(BOB)
    await receive(processor, REMOTE, ROOM, m)
    rec = json.loads(sent[-1][3])
    assert rec["event"]["event_id"] == m.event_id and not rec["soft_failed"] and rec["state_added"] == []


async def test_fork_resolves_by_state_resolution(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    # Bob may set the topic (power 50), then both servers set it concurrently.
    pl_id = await processor.send(NewEventRequest(
        room_id=ROOM, type="m.room.power_levels", sender=ALICE, state_key="",
        content={"users": {ALICE: 100, BOB: 50}, "state_default": 50, "events_default": 0}))
    base = list((await processor.room(ROOM)).extremities)
    assert base == [pl_id]
    base_state = {k: v[0] for k, v in (await processor.room(ROOM)).state.items()}
    alice_topic = await processor.send(NewEventRequest(room_id=ROOM, type="m.room.topic", sender=ALICE,
                                                       state_key="", content={"topic": "alice's"}))
    ats = (await processor._event(alice_topic)).origin_server_ts
    bob_topic = await remote.event("m.room.topic", BOB, {"topic": "bob's"}, state_key="", prev=base,
                                   state=base_state, ts=ats + 1000)
    res = await receive(processor, REMOTE, ROOM, bob_topic)
    assert res["results"] == {bob_topic.event_id: None}
    room = await processor.room(ROOM)
    assert set(room.extremities) == {alice_topic, bob_topic.event_id}
    # Same mainline position: the later origin_server_ts wins.
    assert room.state[("m.room.topic", "")][0] == bob_topic.event_id
    assert (await store.current_state_event(ROOM, "m.room.topic", "")).event_id == bob_topic.event_id
    # The state after each branch is kept separately.
    row = await store.get_event_row(bob_topic.event_id)
    snap = await processor.federated.snapshot_state(row.after_snapshot_nid)
    assert snap[("m.room.topic", "")][0] == bob_topic.event_id
    # A local event merges the fork.
    eid = await processor.send(NewEventRequest(room_id=ROOM, type="m.room.message", sender=ALICE,
                                               content={"body": "merge"}))
    assert set((await processor._event(eid)).prev_event_ids) == {alice_topic, bob_topic.event_id}
    assert list((await processor.room(ROOM)).extremities) == [eid]


async def test_fork_from_two_servers_earlier_ts_loses(processor: RoomInputProcessor) -> None:
    remote = await joined_bob(processor)
    other = FakeRemote(processor, ROOM, server=OTHER, key=OTHER_KEY)
    cj = await other.join(CAROL)
    assert (await receive(processor, OTHER, ROOM, cj))["results"] == {cj.event_id: None}
    await processor.send(NewEventRequest(
        room_id=ROOM, type="m.room.power_levels", sender=ALICE, state_key="",
        content={"users": {ALICE: 100, BOB: 50, CAROL: 50}, "state_default": 50}))
    room = await processor.room(ROOM)
    base, base_state = list(room.extremities), {k: v[0] for k, v in room.state.items()}
    t_bob = await remote.event("m.room.name", BOB, {"name": "B"}, state_key="", prev=base, state=base_state,
                               ts=2_000_000_000_000)
    t_carol = await other.event("m.room.name", CAROL, {"name": "C"}, state_key="", prev=base, state=base_state,
                                ts=2_000_000_000_500)
    assert (await receive(processor, REMOTE, ROOM, t_bob))["results"] == {t_bob.event_id: None}
    assert (await receive(processor, OTHER, ROOM, t_carol))["results"] == {t_carol.event_id: None}
    room = await processor.room(ROOM)
    assert room.state[("m.room.name", "")][0] == t_carol.event_id
    assert set(room.extremities) == {t_bob.event_id, t_carol.event_id}


async def test_banned_users_message_is_soft_failed(processor: RoomInputProcessor, store) -> None:
    sent: list[Any] = []
    processor.on_committed = sent.extend
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    before_ban = list(room.extremities)
    state_before_ban = {k: v[0] for k, v in room.state.items()}
    await processor.send(NewEventRequest(room_id=ROOM, type="m.room.member", sender=ALICE, state_key=BOB,
                                         content={"membership": "ban"}))
    ext = set((await processor.room(ROOM)).extremities)
    # Bob's server had not seen the ban: valid at its prev_events, not now.
    m = await remote.message(BOB, "sneaky", prev=before_ban, state=state_before_ban)
    res = await receive(processor, REMOTE, ROOM, m)
    assert res == {"results": {m.event_id: None}, "soft_failed": [m.event_id]}
    row = await store.get_event_row(m.event_id)
    assert row.soft_failed and not row.rejected
    assert set((await processor.room(ROOM)).extremities) == ext  # never a forward extremity
    import json

    rec = json.loads(sent[-1][3])
    assert rec["event"]["event_id"] == m.event_id and rec["soft_failed"] is True
    assert (await store.membership(ROOM, BOB))[0] == "ban"


async def test_rejections_are_stored_but_never_in_state(processor: RoomInputProcessor, store) -> None:
    sent: list[Any] = []
    remote = await joined_bob(processor)
    processor.on_committed = sent.extend
    room = await processor.room(ROOM)
    state_before = dict(room.state)
    ext_before = set(room.extremities)
    # Not joined: carol's message fails against its own auth events.
    other = FakeRemote(processor, ROOM, server=OTHER, key=OTHER_KEY)
    m = await other.message(CAROL)
    # Bob (power 0) changing power levels: passes nothing.
    pl = await remote.event("m.room.power_levels", BOB, {"users": {BOB: 100}}, state_key="")
    res = await receive(processor, OTHER, ROOM, m)
    assert res["results"][m.event_id].startswith("rejected")
    res = await receive(processor, REMOTE, ROOM, pl)
    assert res["results"][pl.event_id].startswith("rejected")
    for eid in (m.event_id, pl.event_id):
        row = await store.get_event_row(eid)
        assert row is not None and row.rejected
    room = await processor.room(ROOM)
    assert room.state == state_before and set(room.extremities) == ext_before
    assert sent == []  # nothing published
    # An event citing the rejected power levels is rejected in turn.
    m2 = await remote.message(BOB, auth=[*[e for e in (await remote.message(BOB)).auth_event_ids
                                            if e != room.state[("m.room.power_levels", "")][0]],
                                         pl.event_id])
    res = await receive(processor, REMOTE, ROOM, m2)
    assert "rejected" in (res["results"][m2.event_id] or "")
    assert (await store.get_event_row(m2.event_id)).rejected


async def test_state_event_failing_at_the_state_before_it(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    before, before_state = list(room.extremities), {k: v[0] for k, v in room.state.items()}
    # Alice gives bob power 100; bob uses it in an event whose prevs are from before.
    pl_id = await processor.send(NewEventRequest(room_id=ROOM, type="m.room.power_levels", sender=ALICE,
                                                 state_key="", content={"users": {ALICE: 100, BOB: 100}}))
    state_now = {k: v[0] for k, v in (await processor.room(ROOM)).state.items()}
    # Auth events claim the new power levels, but the state at its prev_events has the old ones.
    name = await remote.event("m.room.name", BOB, {"name": "x"}, state_key="", prev=before, state=state_now)
    res = await receive(processor, REMOTE, ROOM, name)
    assert res["results"][name.event_id].startswith("rejected")
    assert (await store.get_event_row(name.event_id)).rejected
    assert ("m.room.name", "") not in (await processor.room(ROOM)).state
    assert pl_id in (await processor.room(ROOM)).extremities


async def test_hostile_pdus_do_not_affect_the_others(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    good = await remote.message(BOB, "good")
    missing_auth = await remote.message(BOB, "no auth", auth=["$doesnotexist"])
    bad_depth = dict((await remote.message(BOB, "deep")).pdu, depth=-5)
    many_prevs = dict((await remote.message(BOB, "prevs")).pdu, prev_events=[f"$p{i}" for i in range(21)])
    wrong_room = await remote.message(BOB, "elsewhere")
    wrong_room_pdu = dict(wrong_room.pdu, room_id="!other:test.local")
    fake_id = dict(good.pdu, event_id="$i-am-someone-else")
    second_create = await remote.event("m.room.create", BOB, {"room_version": "10"}, state_key="", auth=[])
    res = await receive(processor, REMOTE, ROOM, good, missing_auth, bad_depth, many_prevs, wrong_room_pdu,
                        "not a dict", fake_id, second_create)  # type: ignore[arg-type]
    r = res["results"]
    assert r[good.event_id] is None
    assert "missing auth events" in r[missing_auth.event_id]
    assert await store.get_event_row(missing_auth.event_id) is None
    bad = [k for k, v in r.items() if v is not None and k != missing_auth.event_id]
    assert len(bad) == 4  # depth, prev_events, room, a second create: not stored
    assert "create" in r[second_create.event_id]
    for eid in bad:
        assert await store.get_event_row(eid) is None
    # The PDU's own event_id is ignored: it is the good event again (v3+ IDs are hashes).
    assert await store.get_event_row("$i-am-someone-else") is None
    assert list((await processor.room(ROOM)).extremities) == [good.event_id]


async def test_auth_event_from_another_room_is_rejected(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    await make_room(processor, "!second:test.local")
    other_room = await processor.room("!second:test.local")
    foreign_pl = other_room.state[("m.room.power_levels", "")][0]
    room = await processor.room(ROOM)
    auth = [room.state[("m.room.create", "")][0], room.state[("m.room.member", BOB)][0], foreign_pl]
    m = await remote.message(BOB, auth=auth)
    res = await receive(processor, REMOTE, ROOM, m)
    assert "another room" in res["results"][m.event_id]
    assert (await store.get_event_row(m.event_id)).rejected


async def test_pdu_for_a_room_we_are_not_in(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    ev = build_event(remote.rv, type="m.room.message", sender=BOB, room_id="!nowhere:remote.test",
                     content={"body": "x"}, prev_events=["$a"], auth_events=["$b"], depth=3,
                     origin_server_ts=1, server_name=REMOTE, signing_key=remote.key)
    res = await receive(processor, REMOTE, "!nowhere:remote.test", ev)
    assert res["results"] == {ev.event_id: "not in room !nowhere:remote.test"}
    assert await store.get_event_row(ev.event_id) is None


class GapFetcher:
    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.calls: list[tuple[Any, ...]] = []

    async def get_missing_events(self, origin: str, room_id: str, earliest: list[str], latest: list[str],
                                 limit: int, min_depth: int) -> list[dict[str, Any]]:
        self.calls.append((origin, room_id, earliest, latest, limit, min_depth))
        return [e.pdu for e in self.events][:limit]


async def test_missing_prev_events_are_fetched(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    m1 = await remote.message(BOB, "one")
    m2 = await remote.message(BOB, "two", prev=[m1.event_id], depth=m1.depth + 1)
    m3 = await remote.message(BOB, "three", prev=[m2.event_id], depth=m2.depth + 1)
    fetcher = GapFetcher([m2, m1])
    processor.federated.fetcher = fetcher
    res = await receive(processor, REMOTE, ROOM, m3)
    assert res["results"] == {m3.event_id: None}
    assert len(fetcher.calls) == 1 and fetcher.calls[0][3] == [m3.event_id] and fetcher.calls[0][4] == 10
    for e in (m1, m2):
        assert not (await store.get_event_row(e.event_id)).rejected
    assert list((await processor.room(ROOM)).extremities) == [m3.event_id]


async def test_unfetchable_prev_events_use_known_state(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    m = await remote.message(BOB, "after a gap", prev=["$unknown", *room.extremities])
    processor.federated.fetcher = GapFetcher([])
    res = await receive(processor, REMOTE, ROOM, m)
    assert res["results"] == {m.event_id: None}
    # Only-unknown prevs: the current state stands in; the event is accepted.
    m2 = await remote.message(BOB, "orphan", prev=["$nothing-known"], depth=50)
    res = await receive(processor, REMOTE, ROOM, m2)
    assert res["results"] == {m2.event_id: None}
    assert set((await processor.room(ROOM)).extremities) == {m.event_id, m2.event_id}


async def test_gap_fetches_are_bounded_per_input(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    fetcher = GapFetcher([])
    processor.federated.fetcher = fetcher
    gappy = [await remote.message(BOB, f"gap {i}", prev=[f"$missing{i}", *room.extremities]) for i in range(5)]
    res = await receive(processor, REMOTE, ROOM, *gappy)
    assert all(v is None for v in res["results"].values()) and len(res["results"]) == 5
    assert len(fetcher.calls) == 2  # MAX_FETCHES_PER_INPUT; the others use the prevs we have


class AuthFetcher(GapFetcher):
    def __init__(self, chain: list[Any]) -> None:
        super().__init__([])
        self.chain = chain
        self.auth_calls: list[tuple[str, str, str]] = []

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        self.auth_calls.append((origin, room_id, event_id))
        return [e.pdu if hasattr(e, "pdu") else e for e in self.chain]


async def test_missing_auth_events_are_fetched(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    state = {k: v[0] for k, v in room.state.items()}
    # Bob renamed himself in a part of the DAG we never saw; his next message cites it.
    rename = await remote.event("m.room.member", BOB, {"membership": "join", "displayname": "Bobby"},
                                state_key=BOB)
    m = await remote.message(BOB, "as bobby", prev=[rename.event_id], depth=rename.depth + 1,
                             state={**state, ("m.room.member", BOB): rename.event_id})
    fetcher = AuthFetcher([rename, "junk"])
    processor.federated.fetcher = fetcher
    res = await receive(processor, REMOTE, ROOM, m)
    assert res["results"] == {m.event_id: None}
    assert fetcher.auth_calls == [(REMOTE, ROOM, m.event_id)]
    row = await store.get_event_row(rename.event_id)
    assert row is not None and not row.rejected and row.after_snapshot_nid == 0  # an outlier


async def test_fetched_auth_events_that_fail_their_checks(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    state = {k: v[0] for k, v in room.state.items()}
    # A power-levels event by bob (power 0) that never passed anywhere, and a state event citing it.
    pl = await remote.event("m.room.power_levels", BOB, {"users": {BOB: 100}}, state_key="")
    name = await remote.event("m.room.name", BOB, {"name": "mine"}, state_key="", prev=[pl.event_id],
                              depth=pl.depth + 1, state={**state, ("m.room.power_levels", ""): pl.event_id})
    processor.federated.fetcher = AuthFetcher([pl])
    res = await receive(processor, REMOTE, ROOM, name)
    assert "rejected" in res["results"][name.event_id]
    assert (await store.get_event_row(pl.event_id)).rejected
    assert (await store.get_event_row(name.event_id)).rejected
    assert ("m.room.name", "") not in (await processor.room(ROOM)).state


async def test_redactions_that_may_not_take_effect_are_not_delivered(processor: RoomInputProcessor, store) -> None:
    import json

    sent: list[Any] = []
    remote = await joined_bob(processor)
    processor.on_committed = sent.extend
    alice_msg = await processor.send(NewEventRequest(room_id=ROOM, type="m.room.message", sender=ALICE,
                                                     content={"body": "mine"}))
    bob_msg = await remote.message(BOB, "oops")
    await receive(processor, REMOTE, ROOM, bob_msg)
    # Bob (power 0) redacting alice's message: allowed by the v3+ auth rules, but it must not apply.
    from libs.events.builder import build_event

    room = await processor.room(ROOM)
    auth = [room.state[k][0] for k in (("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB))]

    def redaction(target: str, n: int) -> Any:
        return build_event(remote.rv, type="m.room.redaction", sender=BOB, room_id=ROOM, content={},
                           prev_events=list(room.extremities), auth_events=auth, depth=100 + n,
                           origin_server_ts=n, server_name=REMOTE, signing_key=remote.key, redacts=target)

    bad, own = redaction(alice_msg, 1), redaction(bob_msg.event_id, 2)
    res = await receive(processor, REMOTE, ROOM, bad)
    assert res == {"results": {bad.event_id: None}, "soft_failed": []}
    rec = json.loads(sent[-1][3])
    assert rec["event"]["event_id"] == bad.event_id and rec["soft_failed"] is True  # consumers drop it
    assert not (await store.get_event_row(bad.event_id)).soft_failed
    res = await receive(processor, REMOTE, ROOM, own)
    rec = json.loads(sent[-1][3])
    assert rec["event"]["event_id"] == own.event_id and rec["soft_failed"] is False


async def test_failure_at_an_approximated_state_is_a_soft_fail(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    state_then = {k: v[0] for k, v in room.state.items()}
    await processor.send(NewEventRequest(room_id=ROOM, type="m.room.member", sender=ALICE, state_key=BOB,
                                         content={"membership": "ban"}))
    # Prevs we never get: the current state (bob banned) stands in, so we cannot know the
    # event was not allowed where it was sent — soft-failed, not rejected.
    m = await remote.message(BOB, "from the past", prev=["$never-seen"], state=state_then, depth=3)
    res = await receive(processor, REMOTE, ROOM, m)
    assert res == {"results": {m.event_id: None}, "soft_failed": [m.event_id]}
    row = await store.get_event_row(m.event_id)
    assert row.soft_failed and not row.rejected


async def test_a_mixed_transaction_through_the_fast_path(processor: RoomInputProcessor, store) -> None:
    import json

    sent: list[Any] = []
    remote = await joined_bob(processor)
    await processor.send(NewEventRequest(room_id=ROOM, type="m.room.power_levels", sender=ALICE, state_key="",
                                         content={"users": {ALICE: 100, BOB: 50}, "state_default": 50}))
    processor.on_committed = sent.extend
    room = await processor.room(ROOM)
    state = {k: v[0] for k, v in room.state.items()}
    (tip, (_n, d)), = room.extremities.items()
    m1 = await remote.message(BOB, "1", prev=[tip], depth=d + 1, state=state)
    m2 = await remote.message(BOB, "2", prev=[m1.event_id], depth=d + 2, state=state)
    eve = await FakeRemote(processor, ROOM, server=OTHER, key=OTHER_KEY).message(
        CAROL, "not joined", prev=[m2.event_id], depth=d + 3, state=state)
    topic = await remote.event("m.room.topic", BOB, {"topic": "t"}, state_key="", prev=[m2.event_id],
                               depth=d + 3, state=state)
    m3 = await remote.message(BOB, "3", prev=[topic.event_id], depth=d + 4, state=state)
    m4 = await remote.message(BOB, "4", prev=[m3.event_id], depth=d + 5, state=state)
    res = await receive(processor, REMOTE, ROOM, m1, m2, eve, topic, m3, m4)
    r = res["results"]
    assert [r[e.event_id] for e in (m1, m2, topic, m3, m4)] == [None] * 5 and "rejected" in r[eve.event_id]
    # Outputs in depth order, each pointing at the one before.
    recs = [json.loads(x[3]) for x in sent]
    assert [x["event"]["event_id"] for x in recs] == [m1.event_id, m2.event_id, topic.event_id, m3.event_id,
                                                       m4.event_id]
    assert [x["last_sent_event_id"] for x in recs[1:]] == [m1.event_id, m2.event_id, topic.event_id, m3.event_id]
    assert recs[2]["state_added"] == [topic.event_id]
    fresh = RoomInputProcessor(store, "test.local", processor.signing_key)
    loaded = await fresh.room(ROOM)
    assert list(loaded.extremities) == [m4.event_id] == list((await processor.room(ROOM)).extremities)
    assert loaded.state[("m.room.topic", "")][0] == topic.event_id
    for e in (m1, m2, m3, m4):
        row = await store.get_event_row(e.event_id)
        assert row is not None and not row.rejected
    assert (await store.get_event_row(m4.event_id)).before_snapshot_nid == \
        (await store.get_event_row(topic.event_id)).after_snapshot_nid
    # The same transaction again: all already there.
    again = await receive(processor, REMOTE, ROOM, m1, m2, topic, m3, m4)
    assert all(v is None for v in again["results"].values())
