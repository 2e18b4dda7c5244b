"""Durability of the embedded log: close/reopen, and kill -9 in the middle of a burst."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from libs.log import LogError, Record, TopicSpec
from libs.log.embedded import EmbeddedLog

ROOT = Path(__file__).resolve().parents[3]


async def read_all(log: EmbeddedLog, topic: str, group: str) -> list[Record]:
    consumer = log.consumer(group, [topic])
    await consumer.start()
    out: list[Record] = []
    while batch := await consumer.getmany(100, 1000):
        out.extend(batch)
    await consumer.stop()
    return out


async def test_records_and_offsets_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sqlite3")
    log = EmbeddedLog(path)
    await log.start()
    await log.ensure_topics([TopicSpec("dur", 2, retention_ms=None)])
    producer = log.producer()
    for i in range(30):
        await producer.send("dur", f"k{i % 5}", str(i).encode(), {"n": str(i).encode()})
    consumer = log.consumer("g", ["dur"])
    await consumer.start()
    first = []
    while batch := await consumer.getmany(100, 7):
        first.extend(batch)
    assert len(first) == 30
    await consumer.commit({("dur", 0): 3})
    await consumer.stop()
    await log.stop()

    log2 = EmbeddedLog(path)
    await log2.start()
    assert await log2.partitions_for("dur") == 2
    everything = await read_all(log2, "dur", "fresh")
    assert sorted(int(r.value) for r in everything) == list(range(30))
    assert all(r.headers == {"n": r.value} for r in everything)
    resumed = await read_all(log2, "dur", "g")
    # Partition 0 resumes at offset 3; partition 1 (never committed) from the start.
    p0 = [r for r in first if r.partition == 0]
    p1 = [r for r in first if r.partition == 1]
    assert len(resumed) == len(p0) - 3 + len(p1)
    assert min(r.offset for r in resumed if r.partition == 0) == 3
    # Offsets keep growing after a restart (no reuse).
    await log2.producer().send("dur", "k0", b"after")
    tail = await read_all(log2, "dur", "fresh2")
    assert len(tail) == 31
    assert len({(r.partition, r.offset) for r in tail}) == 31
    await log2.stop()


async def test_second_process_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sqlite3")
    log = EmbeddedLog(path)
    await log.start()
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import asyncio
            from libs.log.embedded import EmbeddedLog
            from libs.log import LogError
            async def main():
                try:
                    await EmbeddedLog({path!r}).start()
                except LogError:
                    print("refused")
            asyncio.run(main())
        """)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert child.stdout.strip() == "refused", child.stderr
    await log.stop()


async def test_retention_deletes_old_records(tmp_path: Path) -> None:
    log = EmbeddedLog(str(tmp_path / "log.sqlite3"))
    await log.start()
    await log.ensure_topics([TopicSpec("short", 1, retention_ms=1000), TopicSpec("keep", 1)])
    for t in ("short", "keep"):
        await log.producer().send(t, "k", b"x")
    import time

    deleted = await log.apply_retention(int(time.time() * 1000) + 5000)
    assert deleted == 1
    assert await read_all(log, "short", "g") == []
    assert len(await read_all(log, "keep", "g")) == 1
    await log.producer().send("short", "k", b"y")
    got = await read_all(log, "short", "g2")
    assert [(r.offset, r.value) for r in got] == [(1, b"y")]  # offsets never reused
    await log.stop()


async def test_bad_input_is_typed(tmp_path: Path) -> None:
    log = EmbeddedLog(str(tmp_path / "log.sqlite3"))
    with pytest.raises(LogError):
        await log.producer().send("t", "k", b"x")  # not started
    await log.start()
    with pytest.raises(TypeError):
        await log.producer().send("t", 5, b"x")  # type: ignore[arg-type]
    with pytest.raises(LogError):
        await log.ensure_topics([TopicSpec("zero", 0)])
    await log.stop()


CHILD = """
import asyncio, sys
from libs.log.embedded import EmbeddedLog
from libs.log import TopicSpec

async def main(path, fsync):
    log = EmbeddedLog(path, fsync=fsync == "1")
    await log.start()
    await log.ensure_topics([TopicSpec("burst", 4)])
    producer = log.producer()
    out = sys.stdout

    async def sender(worker):
        n = 0
        while True:
            value = f"{worker}:{n}"
            await producer.send("burst", f"key{worker}", value.encode())
            out.write(value + "\\n")
            out.flush()
            n += 1

    await asyncio.gather(*(sender(w) for w in range(8)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "no-fsync"])
async def test_kill_9_loses_no_acknowledged_record(tmp_path: Path, fsync: bool) -> None:
    path = str(tmp_path / "log.sqlite3")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, path, "1" if fsync else "0", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < 1500:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"child exited early: {err.decode()[-2000:]}")
            acked.append(line.decode().strip())
        assert proc.returncode is None  # still sending when killed
        os.kill(proc.pid, signal.SIGKILL)
        # Lines already written before the kill were acknowledged too.
        rest = await proc.stdout.read()
        acked.extend(x for x in rest.decode().splitlines() if x.count(":") == 1 and x.split(":")[1].isdigit())
    finally:
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        await proc.wait()
    # (the return code is not checked: asyncio's child watcher may report 255)

    log = EmbeddedLog(path)
    await log.start()
    stored = await read_all(log, "burst", "verify")
    await log.stop()
    values = [r.value.decode() for r in stored]
    assert len(values) == len(set(values)), "duplicates after restart"
    missing = set(acked) - set(values)
    assert not missing, f"{len(missing)} acknowledged records lost"
    # Per-key order survived: each worker's sequence is increasing and gap-free.
    by_worker: dict[str, list[int]] = {}
    for v in values:
        w, n = v.split(":")
        by_worker.setdefault(w, []).append(int(n))
    for seq in by_worker.values():
        assert seq == list(range(len(seq)))
