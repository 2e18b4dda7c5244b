"""KeyedRunner batch mode (batch_handler): per-key order, batching of queued
records, poison isolation, watermark commits, revocation mid-batch."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.log import KeyedRunner, Record, RetryPolicy, RunnerConfig, TopicSpec
from libs.log.embedded import EmbeddedLog

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.01)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    lg = EmbeddedLog(str(tmp_path / "log.sqlite3"), fsync=False)
    await lg.start()
    yield lg
    await lg.stop()


async def until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def test_exactly_one_handler_kind() -> None:
    with pytest.raises(ValueError):
        KeyedRunner(object(), None)  # type: ignore[arg-type]


async def test_queued_records_of_a_key_come_as_one_batch_in_order(log: EmbeddedLog) -> None:
    await log.ensure_topics([TopicSpec("in", 2)])
    gate = asyncio.Event()
    batches: list[tuple[str, list[int]]] = []

    async def handle(recs: list[Record]) -> None:
        assert len({r.key for r in recs}) == 1
        if recs[0].value == b"0":
            await gate.wait()  # the first record holds the key: the rest queue up
        batches.append((recs[0].key, [int(r.value) for r in recs]))

    runner = KeyedRunner(log.consumer("g", ["in"]), batch_handler=handle,
                         config=RunnerConfig(commit_interval_s=0.005, max_batch=30))
    await runner.start()
    p = log.producer()
    await asyncio.gather(*(p.send("in", "a", str(i).encode()) for i in range(1)))
    await until(lambda: runner.stats().in_flight == 1)
    for i in range(1, 51):
        await p.send("in", "a", str(i).encode())
        await p.send("in", "b", str(i).encode())
    await until(lambda: runner.stats().buffered >= 51)
    gate.set()
    await until(lambda: sum(len(b) for k, b in batches if k == "a") == 51
                and sum(len(b) for k, b in batches if k == "b") == 50)
    per_key: dict[str, list[int]] = defaultdict(list)
    for k, vals in batches:
        per_key[k].extend(vals)
    assert per_key["a"] == list(range(51))
    assert per_key["b"] == list(range(1, 51))
    a_batches = [vals for k, vals in batches if k == "a"]
    assert a_batches[0] == [0]
    assert a_batches[1] == list(range(1, 31))  # everything queued, capped at max_batch
    assert max(len(b) for b in a_batches) == 30
    await until(lambda: sum(runner.stats().committed.values()) == 101)
    assert runner.processed == 101
    await runner.stop()


async def test_failed_batch_is_retried_one_by_one_and_poison_dead_lettered(log: EmbeddedLog) -> None:
    await log.ensure_topics([TopicSpec("in", 1)])
    gate = asyncio.Event()
    seen: list[list[int]] = []
    applied: list[int] = []
    dead: list[int] = []

    async def handle(recs: list[Record]) -> None:
        vals = [int(r.value) for r in recs]
        if vals == [0]:
            await gate.wait()
        seen.append(vals)
        if 5 in vals:
            raise RuntimeError("poison")
        applied.extend(vals)

    async def dead_letter(rec: Record, exc: BaseException) -> None:
        dead.append(int(rec.value))

    runner = KeyedRunner(log.consumer("g", ["in"]), batch_handler=handle, dead_letter=dead_letter,
                         config=RunnerConfig(commit_interval_s=0.005, retry=FAST_RETRY))
    await runner.start()
    p = log.producer()
    await p.send("in", "k", b"0")
    await until(lambda: runner.stats().in_flight == 1)
    for i in range(1, 10):
        await p.send("in", "k", str(i).encode())
    await until(lambda: runner.stats().buffered == 10)
    gate.set()
    await until(lambda: runner.stats().committed.get(("in", 0)) == 10)
    assert seen[1] == list(range(1, 10))  # the batch, failed
    assert [s for s in seen[2:] if len(s) > 1] == []  # then one at a time
    assert dead == [5]
    assert applied == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert seen.count([5]) == FAST_RETRY.max_attempts
    await runner.stop()


async def test_revocation_mid_batch_keeps_running_batch_and_drops_queue(log: EmbeddedLog) -> None:
    await log.ensure_topics([TopicSpec("in", 1)])
    gate = asyncio.Event()
    started = asyncio.Event()
    done: list[int] = []

    async def handle(recs: list[Record]) -> None:
        vals = [int(r.value) for r in recs]
        if len(vals) > 1:
            started.set()
            await gate.wait()
        done.extend(vals)

    block = asyncio.Event()

    async def first(recs: list[Record]) -> None:
        if recs[0].value == b"0":
            await block.wait()
        await handle(recs)

    runner = KeyedRunner(log.consumer("g", ["in"]), batch_handler=first,
                         config=RunnerConfig(commit_interval_s=0.005, max_batch=5))
    await runner.start()
    p = log.producer()
    await p.send("in", "k", b"0")
    await until(lambda: runner.stats().in_flight == 1)
    for i in range(1, 12):
        await p.send("in", "k", str(i).encode())
    await until(lambda: runner.stats().buffered == 12)
    block.set()
    await started.wait()  # batch [1..5] is running, 6..11 queued
    revoke = asyncio.create_task(runner.on_revoked({("in", 0)}))
    await asyncio.sleep(0.02)
    gate.set()
    await revoke
    assert done == [0, 1, 2, 3, 4, 5]
    assert await runner.consumer.committed(("in", 0)) == 6
    await runner.stop()


async def test_embedded_send_batch_appends_in_order(log: EmbeddedLog) -> None:
    await log.ensure_topics([TopicSpec("out", 3)])
    p = log.producer()
    recs = [(f"room{i % 7}", f"{i}".encode(), {"h": b"1"} if i % 2 else None) for i in range(300)]
    await p.send_batch("out", recs)  # type: ignore[attr-defined]
    await p.send_batch("out", [])  # type: ignore[attr-defined]
    got: dict[str, list[int]] = defaultdict(list)
    c = log.consumer("r", ["out"])
    await c.start()
    n = 0
    while n < 300:
        batch = await c.getmany(1000, 500)
        for r in batch:
            got[r.key].append(int(r.value))
            assert (r.headers == {"h": b"1"}) == (int(r.value) % 2 == 1)
        n += len(batch)
    await c.stop()
    for k in range(7):
        assert got[f"room{k}"] == [i for i in range(300) if i % 7 == k]
    with pytest.raises(TypeError):
        await p.send_batch("out", [(1, b"x", None)])  # type: ignore[attr-defined,list-item]
