"""GroupCommitter: concurrent projection batches share one transaction, in arrival
order; a failing combined call is retried per batch; the real projector projects
several rooms' batches in one call exactly as it does one by one."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.syncapi.groupcommit import GroupCommitter
from tests.unit.syncapi.helpers import FakeRoom, make_harness, sqlite_db
from tests.unit.syncapi.test_projection_sync import A, B, sync


class _Recorder:
    def __init__(self, fail_if: Any = None, delay_s: float = 0.01) -> None:
        self.calls: list[list[int]] = []
        self.fail_if = fail_if
        self.delay_s = delay_s

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        await asyncio.sleep(self.delay_s)
        if self.fail_if is not None and self.fail_if(items):
            raise ValueError(f"bad batch {items}")
        return [x * 10 for x in items]


async def test_concurrent_batches_are_merged_in_order() -> None:
    rec = _Recorder()
    gc: GroupCommitter[int, int] = GroupCommitter(rec)
    first = asyncio.create_task(gc.submit([1, 2]))
    await asyncio.sleep(0)  # the first call is in flight
    rest = [asyncio.create_task(gc.submit([n])) for n in (3, 4, 5)]
    assert await first == [10, 20]
    assert [await t for t in rest] == [[30], [40], [50]]
    assert rec.calls == [[1, 2], [3, 4, 5]]
    assert gc.calls == 2 and gc.merged == 3


async def test_failed_combined_call_isolates_the_bad_batch() -> None:
    rec = _Recorder(fail_if=lambda items: 4 in items)
    gc: GroupCommitter[int, int] = GroupCommitter(rec)
    first = asyncio.create_task(gc.submit([1]))
    await asyncio.sleep(0)
    a, b, c = (asyncio.create_task(gc.submit([n])) for n in (3, 4, 5))
    assert await first == [10]
    assert await a == [30] and await c == [50]
    with pytest.raises(ValueError):
        await b
    assert rec.calls == [[1], [3, 4, 5], [3], [4], [5]]


async def test_max_items_bounds_a_call_and_cancelled_caller_does_not_cancel_others() -> None:
    rec = _Recorder(delay_s=0.05)
    gc: GroupCommitter[int, int] = GroupCommitter(rec, max_items=2)
    first = asyncio.create_task(gc.submit([0]))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(gc.submit([n])) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    assert await first == [0]
    assert await waiting[1] == [20] and await waiting[2] == [30]
    assert rec.calls == [[0], [1, 2], [3]]  # the cancelled caller's item was still projected
    assert await gc.submit([]) == []


async def test_projector_rooms_merged_equal_one_by_one(tmp_path: Any) -> None:
    outs = []
    for merged in (False, True):
        db = await sqlite_db(tmp_path / str(merged))
        try:
            h = await make_harness(db)
            rooms = [FakeRoom(f"!g{i}:test.local") for i in range(3)]
            batches = [[*r.create(A), r.join(B), r.msg(A, f"hello {i}"), r.msg(B, f"hi {i}")]
                       for i, r in enumerate(rooms)]
            if merged:
                gc = GroupCommitter(h.projector.on_outputs)
                results = await asyncio.gather(*(gc.submit(b) for b in batches))
                assert gc.calls <= 2
            else:
                results = [await h.projector.on_outputs(b) for b in batches]
            assert all(all(r) for r in results)
            resp = await sync(h, B)
            # (event IDs differ between runs: FakeRoom makes fresh ones; compare what they are)
            outs.append({rid: [(e["type"], e.get("state_key"), e["content"].get("body")) for e in room["timeline"]["events"]]
                         for rid, room in resp["rooms"]["join"].items()})
        finally:
            await db.close()
    assert outs[0] == outs[1] and len(outs[0]) == 3
