"""`SyncActivity`: the in-memory answers of the incremental /sync path, and that
they agree with the database answers while costing fewer queries."""
from __future__ import annotations

import asyncio
from typing import Any

from services.syncapi.activity import SyncActivity
from services.syncapi.api import ClientDataRecord
from services.syncapi.broadcast import apply_payload
from services.syncapi.internal import SyncInternal
from services.syncapi.storage.store import MembershipRow
from services.syncapi.streams import Notifier, Positions, parse_token
from services.syncapi.sync import SyncEngine, SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, Harness

A, B = "@alice:test.local", "@bob:test.local"


def test_rooms_with_events_unknown_until_started_and_before_floor() -> None:
    act = SyncActivity()
    act.note("events", 5, ["r:!a", "e:$1"])
    assert act.rooms_with_events(["!a"], 0) is None  # not started
    act.start(10)
    assert act.rooms_with_events(["!a", "!b"], 9) is None  # before the floor: memory cannot tell
    assert act.rooms_with_events(["!a", "!b"], 10) == set()
    act.note("events", 12, ["r:!b", "e:$2"])
    act.note("receipts", 13, ["r:!a"])  # other streams do not move a room's event position
    assert act.rooms_with_events(["!a", "!b"], 10) == {"!b"}
    assert act.rooms_with_events(["!a", "!b"], 12) == set()


def test_projected_is_a_bounded_recent_set() -> None:
    act = SyncActivity(recent_events=2)
    for i in range(3):
        act.note("events", i + 1, [f"r:!a", f"e:$e{i}"])
    assert not act.projected("$e0") and act.projected("$e1") and act.projected("$e2")
    act.note("to_device", 9, ["e:$x", "u:@a"])  # only the events stream projects events
    assert not act.projected("$x")


def test_membership_unchanged_tracks_u_keys_of_events() -> None:
    act = SyncActivity()
    assert not act.membership_unchanged(A, 100)  # not started
    act.start(1)
    assert act.membership_unchanged(A, 1)
    act.note("events", 5, ["r:!a", "e:$j", f"u:{A}"])
    assert not act.membership_unchanged(A, 4) and act.membership_unchanged(A, 5)
    assert act.membership_unchanged(B, 4)


def test_truncated_announcement_drops_every_cached_user() -> None:
    act = SyncActivity()
    act.start(0)
    act._rooms[A] = []
    act._ignored[B] = set()
    act.note("events", 3, ["r:!a"])  # (keys cut to one: who it concerns is unknown)
    assert A not in act._rooms and B not in act._ignored


class _CountingStore:
    def __init__(self) -> None:
        self.calls = 0
        self.rows = [MembershipRow("!a", "join", "$m", 1)]
        self.gate: asyncio.Event | None = None

    async def rooms_for_user(self, user_id: str) -> list[MembershipRow]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return list(self.rows)


async def test_rooms_cache_invalidated_by_u_key_and_not_filled_by_a_raced_query() -> None:
    act, store = SyncActivity(), _CountingStore()
    await act.rooms_for_user(store, A)  # type: ignore[arg-type]
    await act.rooms_for_user(store, A)  # type: ignore[arg-type]
    assert store.calls == 2  # unstarted: never cached
    act.start(0)
    await act.rooms_for_user(store, A)  # type: ignore[arg-type]
    assert [m.room_id for m in await act.rooms_for_user(store, A)] == ["!a"]  # type: ignore[arg-type]
    assert store.calls == 3
    store.rows = [MembershipRow("!b", "join", "$n", 2)]
    act.note("events", 2, ["r:!b", "e:$n", f"u:{A}"])
    assert [m.room_id for m in await act.rooms_for_user(store, A)] == ["!b"]  # type: ignore[arg-type]
    # A query that started before an invalidation may hold the old rows: not cached.
    act.invalidate_user(A)
    store.gate = asyncio.Event()
    task = asyncio.create_task(act.rooms_for_user(store, A))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    act.note("events", 3, ["r:!c", "e:$o", f"u:{A}"])
    store.gate.set()
    await task
    assert A not in act._rooms


def test_broadcast_payload_feeds_activity_before_positions() -> None:
    act, pos, notifier = SyncActivity(), Positions(), Notifier()
    act.start(0)
    assert apply_payload('{"s": "events", "p": 7, "k": ["r:!a", "e:$z", "u:@b"]}', pos, notifier, act)
    assert pos.events == 7 and act.projected("$z") and act.rooms_with_events(["!a"], 6) == {"!a"}
    assert not act.membership_unchanged("@b", 6)


class _NoQueries:
    async def event_pos(self, event_id: str) -> Any:
        raise AssertionError("queried the database")


async def test_wait_for_event_answers_from_memory() -> None:
    act = SyncActivity()
    act.note("events", 1, ["r:!a", "e:$seen"])
    internal = SyncInternal(_NoQueries(), engine=None, notifier=Notifier(), activity=act)  # type: ignore[arg-type]
    assert await internal.wait_for_event("$seen", 0.01) is True


async def _feed(h: Harness, *recs: Any) -> None:
    for r in recs:
        await h.projector.on_output(r)


async def _count_queries(h: Harness, coro: Any) -> tuple[Any, int]:
    n = [0]
    db: Any = h.store.db
    originals = {name: getattr(db, name) for name in ("fetch", "fetchrow", "execute")}

    def wrap(fn: Any) -> Any:
        async def inner(*a: Any, **kw: Any) -> Any:
            n[0] += 1
            return await fn(*a, **kw)
        return inner
    for name, fn in originals.items():
        setattr(db, name, wrap(fn))
    try:
        return await coro, n[0]
    finally:
        for name, fn in originals.items():
            setattr(db, name, fn)


async def test_incremental_sync_same_response_fewer_queries(h: Harness) -> None:
    rooms = [FakeRoom(f"!r{i}:test.local") for i in range(5)]
    for room in rooms:
        await _feed(h, *room.create(A), room.join(B))
    await h.projector.on_client_data(ClientDataRecord(type="account_data", user_id=B, room_id="",
                                                      data_type="m.ignored_user_list"))
    first, _ = await h.engine.build(SyncRequest(B, "DEV"))
    since = parse_token(first["next_batch"])
    await h.engine.build(SyncRequest(B, "DEV", since=since))  # fills the per-user caches
    await _feed(h, rooms[2].msg(A, "hello"))
    cold = SyncEngine(h.store, h.positions, h.notifier, h.typing, clock_ms=lambda: h.clock[0])  # DB only
    (want, _), n_db = await _count_queries(h, cold.build(SyncRequest(B, "DEV", since=since)))
    (got, has), n_mem = await _count_queries(h, h.engine.build(SyncRequest(B, "DEV", since=since)))
    assert has and got == want
    assert list(got["rooms"]["join"]) == [rooms[2].room_id]
    assert n_mem < n_db, (n_mem, n_db)
    assert n_mem <= 8, n_mem
    # A membership change is seen at once (the cached room list is dropped).
    extra = FakeRoom("!new:test.local")
    await _feed(h, *extra.create(A), extra.join(B))
    got2, _ = await h.engine.build(SyncRequest(B, "DEV", since=parse_token(got["next_batch"])))
    assert extra.room_id in got2["rooms"]["join"]
