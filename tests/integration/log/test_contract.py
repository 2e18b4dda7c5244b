"""One contract suite for both EventLog implementations (embedded and Kafka)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from libs.log import Consumer, Record, TopicPartition, TopicSpec, partition_for

from .conftest import LogFactory, eventually


async def drain(consumer: Consumer, want: int, timeout: float = 20.0) -> list[Record]:
    out: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(out) < want and loop.time() < deadline:
        out.extend(await consumer.getmany(200, 1000))
    return out


class Hooks:
    def __init__(self) -> None:
        self.revoked: list[set[TopicPartition]] = []
        self.assigned: list[set[TopicPartition]] = []

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.revoked.append(set(partitions))

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.assigned.append(set(partitions))


async def test_round_trip(logs: LogFactory) -> None:
    log = await logs.open()
    await log.ensure_topics([TopicSpec("rt", 4, retention_ms=3_600_000)])
    assert await log.partitions_for("rt") == 4
    producer = log.producer()
    await producer.send("rt", "!room:a", b"one", {"h": b"\x00\x01"})
    await producer.send("rt", "!room:a", b"two")
    consumer = log.consumer(logs.group("g"), ["rt"])
    await consumer.start()
    got = await drain(consumer, 2)
    assert [r.value for r in got] == [b"one", b"two"]
    first = got[0]
    assert first.topic == "rt" and first.key == "!room:a"
    assert first.headers == {"h": b"\x00\x01"}
    assert first.partition == partition_for("!room:a", 4)
    assert got[1].offset == first.offset + 1
    assert first.timestamp_ms > 1_600_000_000_000
    assert await consumer.getmany(100, 10) == []
    await consumer.stop()


async def test_per_key_order_and_placement(logs: LogFactory) -> None:
    log = await logs.open()
    await log.ensure_topics([TopicSpec("order", 3)])
    producer = log.producer()
    keys = [f"!r{i}:example.org" for i in range(40)]
    per_key = 15

    async def send_key(key: str) -> None:
        for n in range(per_key):
            await producer.send("order", key, f"{key}|{n}".encode())

    await asyncio.gather(*(send_key(k) for k in keys))
    consumer = log.consumer(logs.group("g"), ["order"])
    await consumer.start()
    got = await drain(consumer, len(keys) * per_key)
    assert len(got) == len(keys) * per_key
    seen: dict[str, list[int]] = defaultdict(list)
    for r in got:
        key, n = r.value.decode().split("|")
        assert key == r.key
        assert r.partition == partition_for(key, 3)
        seen[key].append(int(n))
    for key in keys:
        assert seen[key] == list(range(per_key)), key
    await consumer.stop()


async def test_group_splits_and_rebalances(logs: LogFactory) -> None:
    log = await logs.open()
    await log.ensure_topics([TopicSpec("grp", 4)])
    all_parts = {("grp", p) for p in range(4)}
    a = log.consumer(logs.group("g"), ["grp"])
    b = log.consumer(logs.group("g"), ["grp"])
    hooks_a, hooks_b = Hooks(), Hooks()
    a.set_rebalance_listener(hooks_a)
    b.set_rebalance_listener(hooks_b)
    await a.start()

    async def poll(*cs: Consumer) -> None:
        await asyncio.gather(*(c.getmany(50, 10) for c in cs))

    async def a_has_all() -> bool:
        await poll(a)
        return a.assignment() == all_parts

    await eventually(a_has_all)
    await b.start()

    async def split() -> bool:
        await poll(a, b)
        sa, sb = a.assignment(), b.assignment()
        return len(sa) == 2 and len(sb) == 2 and sa | sb == all_parts

    await eventually(split)
    # Kafka's classic protocol revokes eagerly (everything, then reassigns); the
    # embedded log revokes only what moves. Both revoke at least what b got.
    assert hooks_a.revoked and b.assignment() <= set().union(*hooks_a.revoked)
    # Records are read by the owner only.
    producer = log.producer()
    for i in range(20):
        await producer.send("grp", f"k{i}", b"x")
    got_a = await drain(a, 1, timeout=3)
    got_b = await drain(b, 1, timeout=3)
    got_a += await drain(a, 20 - len(got_a) - len(got_b), timeout=2)
    got_b += await drain(b, 20 - len(got_a) - len(got_b), timeout=2)
    assert len(got_a) + len(got_b) == 20
    assert all(r.tp in a.assignment() for r in got_a)
    assert all(r.tp in b.assignment() for r in got_b)

    await a.stop()

    async def b_has_all() -> bool:
        await poll(b)
        return b.assignment() == all_parts

    await eventually(b_has_all)
    assert hooks_b.assigned and set().union(*hooks_b.assigned) == all_parts
    await b.stop()


async def test_uncommitted_redelivered_committed_not(logs: LogFactory) -> None:
    log = await logs.open()
    await log.ensure_topics([TopicSpec("redo", 1)])
    producer = log.producer()
    for i in range(10):
        await producer.send("redo", "k", str(i).encode())
    c1 = log.consumer(logs.group("g"), ["redo"])
    await c1.start()
    got = await drain(c1, 10)
    assert [int(r.value) for r in got] == list(range(10))
    await c1.commit({("redo", 0): got[4].offset + 1})  # first five done
    assert await c1.committed(("redo", 0)) == got[4].offset + 1
    await c1.stop()

    c2 = log.consumer(logs.group("g"), ["redo"])
    await c2.start()
    again = await drain(c2, 5)
    assert [int(r.value) for r in again] == [5, 6, 7, 8, 9]
    assert await c2.getmany(200, 10) == []
    await c2.commit({("redo", 0): again[-1].offset + 1})
    await c2.stop()

    # A fresh group starts at the earliest record.
    c3 = log.consumer(logs.group("other"), ["redo"])
    await c3.start()
    assert len(await drain(c3, 10)) == 10
    await c3.stop()

    c4 = log.consumer(logs.group("g"), ["redo"])
    await c4.start()
    assert await c4.getmany(300, 10) == []
    await c4.stop()


async def test_redelivery_after_rebalance(logs: LogFactory) -> None:
    """Records a member read but did not commit go to the next owner."""
    log = await logs.open()
    await log.ensure_topics([TopicSpec("move", 2)])
    producer = log.producer()
    for i in range(10):
        await producer.send("move", f"k{i}", b"v")
    a = log.consumer(logs.group("g"), ["move"])
    await a.start()
    assert len(await drain(a, 10)) == 10  # read, never committed
    b = log.consumer(logs.group("g"), ["move"])
    await b.start()

    async def split() -> bool:
        await asyncio.gather(a.getmany(50, 100), b.getmany(50, 100))
        return len(a.assignment()) == 1 and len(b.assignment()) == 1

    # Records b reads during the handover are the redelivered ones: collect them too.
    received: list[Record] = []

    async def split_and_collect() -> bool:
        received.extend(await b.getmany(50, 100))
        return await split()

    await eventually(split_and_collect)
    (moved,) = b.assignment()
    expected = sum(1 for i in range(10) if partition_for(f"k{i}", 2) == moved[1])
    received.extend(await drain(b, expected - len(received), timeout=5))
    assert len([r for r in received if r.tp == moved]) == expected
    await a.stop()
    await b.stop()


async def test_tail_reader_sees_only_new_records(logs: LogFactory) -> None:
    log = await logs.open()
    await log.ensure_topics([TopicSpec("tail", 2)])
    producer = log.producer()
    key = "inst-1"
    part = partition_for(key, 2)
    await producer.send("tail", key, b"old")
    reader = log.tail("tail", part)
    await reader.start()
    await producer.send("tail", key, b"new")
    got = await drain(reader, 1, timeout=10)
    assert [r.value for r in got] == [b"new"]
    await reader.stop()


async def test_embedded_wakes_consumer_quickly(logs: LogFactory) -> None:
    """A waiting consumer gets a record long before its poll timeout."""
    log = await logs.open()
    await log.ensure_topics([TopicSpec("wake", 1)])
    consumer = log.consumer(logs.group("g"), ["wake"])
    await consumer.start()
    await eventually(lambda: consumer.assignment() == {("wake", 0)}) if logs.kind == "embedded" else None
    if logs.kind == "kafka":
        async def assigned() -> bool:
            await consumer.getmany(50, 10)
            return bool(consumer.assignment())
        await eventually(assigned)
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(consumer.getmany(5000, 10))
    await asyncio.sleep(0.05)
    t0 = loop.time()
    await log.producer().send("wake", "k", b"now")
    got = await waiter
    elapsed = loop.time() - t0
    assert [r.value for r in got] == [b"now"]
    assert elapsed < 1.0
    await consumer.stop()


async def test_runner_handover_between_members(logs: LogFactory) -> None:
    """Two KeyedRunners in one group: a joins, b joins mid-stream, a leaves.
    Every record is handled, one key never runs on two members at once, and
    after both stop nothing is left uncommitted."""
    from libs.log import KeyedRunner, RunnerConfig

    log = await logs.open()
    await log.ensure_topics([TopicSpec("work", 4)])
    handled: dict[str, list[int]] = defaultdict(list)
    running: set[str] = set()
    overlap = False

    async def handler(rec: Record) -> None:
        nonlocal overlap
        if rec.key in running:
            overlap = True
        running.add(rec.key)
        await asyncio.sleep(0.002)
        handled[rec.key].append(int(rec.value))
        running.discard(rec.key)

    cfg = RunnerConfig(commit_interval_s=0.01, fetch_timeout_ms=100)
    keys = [f"!room{i}:x" for i in range(12)]
    producer = log.producer()

    async def produce(lo: int, hi: int) -> None:
        for n in range(lo, hi):
            await asyncio.gather(*(producer.send("work", k, str(n).encode()) for k in keys))

    a = KeyedRunner(log.consumer(logs.group("g"), ["work"]), handler, config=cfg)
    b = KeyedRunner(log.consumer(logs.group("g"), ["work"]), handler, config=cfg)
    await a.start()
    await produce(0, 10)
    await b.start()
    await produce(10, 20)
    await eventually(lambda: len(b.consumer.assignment()) == 2)
    await a.stop()
    await produce(20, 30)
    await eventually(lambda: all(handled[k] and max(handled[k]) == 29 for k in keys), timeout=30)
    await b.stop()
    assert not overlap
    for k in keys:
        assert set(handled[k]) == set(range(30))
        firsts = [handled[k].index(n) for n in range(30)]
        assert firsts == sorted(firsts), k
    # Everything handled was committed: a new member of the group gets nothing.
    c = log.consumer(logs.group("g"), ["work"])
    await c.start()
    leftovers: list[Record] = []

    async def owns_all() -> bool:
        leftovers.extend(await c.getmany(100, 100))
        return len(c.assignment()) == 4

    await eventually(owns_all)
    for _ in range(3):
        leftovers.extend(await c.getmany(100, 100))
    assert leftovers == []
    for p in range(4):
        assert await c.committed(("work", p)) == c.highwater(("work", p))
    await c.stop()


async def test_oversized_record_is_a_typed_error(logs: LogFactory) -> None:
    from libs.log import RecordTooLargeError

    log = await logs.open()
    await log.ensure_topics([TopicSpec("big", 1)])
    producer = log.producer()
    try:
        await producer.send("big", "k", b"x" * 2_000_000)
    except RecordTooLargeError:
        pass
    else:
        raise AssertionError("oversized record accepted")
    await producer.send("big", "k", b"x" * 100_000)  # large but allowed
    consumer = log.consumer(logs.group("g"), ["big"])
    await consumer.start()
    got = await drain(consumer, 1)
    assert [len(r.value) for r in got] == [100_000]
    await consumer.stop()
