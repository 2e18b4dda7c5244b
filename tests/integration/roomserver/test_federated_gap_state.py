"""The state at a gap: a PDU whose earliest fetched ancestor's prev we lack (SyTest's
"outlier" fixture, 50federation/00prepare.pl send_and_await_outlier): S arrives, its prev
R comes from get_missing_events, R's prev Q never does — the origin's /state_ids at Q
(events fetched one by one with /event; no /event_auth) gives R a known state before, and
Q is stored as an outlier."""
from __future__ import annotations

from typing import Any

from services.roomserver.input import RoomInputProcessor

from .fedhelpers import REMOTE, receive
from .test_federated_input import BOB, ROOM, joined_bob


class StateFetcher:
    def __init__(self, events: dict[str, Any], missing: list[Any], state_ids: dict[str, list[str]]) -> None:
        self.events, self.missing, self.state_ids = events, missing, state_ids
        self.calls: list[tuple[str, str]] = []

    async def get_missing_events(self, origin: str, room_id: str, earliest: list[str], latest: list[str],
                                 limit: int, min_depth: int) -> list[dict[str, Any]]:
        self.calls.append(("get_missing_events", latest[0]))
        return [e.pdu for e in self.missing]

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        self.calls.append(("event_auth", event_id))
        raise OSError("404: SyTest's servers have no /event_auth")

    async def get_event(self, origin: str, room_id: str, event_id: str) -> dict[str, Any] | None:
        self.calls.append(("event", event_id))
        ev = self.events.get(event_id)
        return ev.pdu if ev is not None else None

    async def get_state_ids(self, origin: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        self.calls.append(("state_ids", event_id))
        return self.state_ids.get(event_id, []), []


async def test_state_at_a_gap_is_fetched(processor: RoomInputProcessor, store) -> None:
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    room_ext = list(room.extremities)
    state = {k: v[0] for k, v in room.state.items()}
    q = await remote.event("m.room.member", BOB, {"membership": "join", "displayname": "Q"}, state_key=BOB)
    after_q = {**state, ("m.room.member", BOB): q.event_id}
    r = await remote.message(BOB, "R", prev=[q.event_id], depth=q.depth + 1, state=after_q)
    s = await remote.message(BOB, "S", prev=[r.event_id], depth=r.depth + 2, state=after_q)
    fetcher = StateFetcher({q.event_id: q}, [r], {q.event_id: list(state.values())})
    processor.federated.fetcher = fetcher
    res = await receive(processor, REMOTE, ROOM, s)
    assert res["results"] == {s.event_id: None} and res["soft_failed"] == []
    assert ("state_ids", q.event_id) in fetcher.calls and ("event", q.event_id) in fetcher.calls
    q_row = await store.get_event_row(q.event_id)
    assert q_row is not None and not q_row.rejected and q_row.after_snapshot_nid == 0  # an outlier
    r_row = await store.get_event_row(r.event_id)
    assert r_row is not None and not r_row.rejected and not r_row.soft_failed
    before_r = await processor.federated.snapshot_state(r_row.before_snapshot_nid)
    assert before_r[("m.room.member", BOB)][0] == q.event_id  # the state after Q, not ours
    assert before_r[("m.room.create", "")][0] == state[("m.room.create", "")]
    # Q forked off before our extremity: both branches stay forward extremities.
    assert set((await processor.room(ROOM)).extremities) == {*room_ext, s.event_id}


async def test_a_pushed_event_never_asks_for_the_state_at_its_missing_prev(processor: RoomInputProcessor,
                                                                          store) -> None:
    # 36state.pl "Federation rejects inbound events where the prev_events cannot be found":
    # no /state_ids at a prev the sender would not give to get_missing_events.
    remote = await joined_bob(processor)
    m = await remote.message(BOB, "after a gap", prev=["$unknown"], depth=40)
    fetcher = StateFetcher({}, [], {})
    processor.federated.fetcher = fetcher
    res = await receive(processor, REMOTE, ROOM, m)
    assert res["results"] == {m.event_id: None}  # the approximation stands (documented)
    assert ("get_missing_events", m.event_id) in fetcher.calls
    assert not any(c[0] == "state_ids" for c in fetcher.calls)


async def test_a_rejected_event_of_the_gap_state_is_left_out(processor: RoomInputProcessor, store) -> None:
    # 36state.pl "Outbound federation requests missing prev_events and then asks for
    # /state_ids and resolves the state": the origin's state names an event that fails
    # its auth checks here; the rest of that state is used without it.
    remote = await joined_bob(processor)
    room = await processor.room(ROOM)
    state = {k: v[0] for k, v in room.state.items()}
    # Bob (power 0) may not send the room name: rejected when fetched.
    bad = await remote.event("m.room.name", BOB, {"name": "hijack"}, state_key="")
    t = await remote.event("m.room.member", BOB, {"membership": "join", "displayname": "T"}, state_key=BOB)
    y = await remote.message(BOB, "Y", prev=[t.event_id], depth=t.depth + 1,
                             state={**state, ("m.room.member", BOB): t.event_id})
    x = await remote.message(BOB, "X", prev=[y.event_id], depth=y.depth + 1,
                             state={**state, ("m.room.member", BOB): t.event_id})
    c = await remote.message(BOB, "C", prev=[x.event_id], depth=x.depth + 1,
                             state={**state, ("m.room.member", BOB): t.event_id})
    gap_state = [*state.values(), bad.event_id, t.event_id]
    fetcher = StateFetcher({e.event_id: e for e in (bad, t, y)}, [x], {y.event_id: gap_state})
    processor.federated.fetcher = fetcher
    res = await receive(processor, REMOTE, ROOM, c)
    assert res["results"] == {c.event_id: None}
    assert (await store.get_event_row(bad.event_id)).rejected
    x_row = await store.get_event_row(x.event_id)
    before_x = await processor.federated.snapshot_state(x_row.before_snapshot_nid)
    assert before_x[("m.room.member", BOB)][0] == t.event_id
    assert ("m.room.name", "") not in before_x or before_x[("m.room.name", "")][0] != bad.event_id
