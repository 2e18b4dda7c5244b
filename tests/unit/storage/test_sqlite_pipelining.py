"""SQLite transactions defer statements without results: one thread hop per
result needed (plus COMMIT), and a failing deferred statement still fails the
whole transaction."""
from __future__ import annotations

import pytest

from libs.config import DatabaseConfig
from libs.storage import UniqueViolation, open_database
from libs.storage.sqlite import SqliteDatabase


async def _db(tmp_path) -> SqliteDatabase:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "pipe", None)
    assert isinstance(db, SqliteDatabase)
    await db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    return db


def _count_hops(db: SqliteDatabase) -> list[int]:
    calls = [0]
    original = db._writer.call

    async def counting(fn):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return await original(fn)

    db._writer.call = counting  # type: ignore[method-assign]
    return calls


async def test_writes_ride_with_the_next_read_and_the_commit(tmp_path) -> None:
    db = await _db(tmp_path)
    try:
        hops = _count_hops(db)
        async with db.transaction() as tx:
            for i in range(5):
                await tx.execute("INSERT INTO t (k, v) VALUES ($1, $2)", i, "x")
            await tx.executemany("INSERT INTO t (k, v) VALUES ($1, $2)", [(i, "y") for i in range(5, 9)])
            # The read sees the deferred writes (same connection, same transaction).
            assert await tx.fetchval("SELECT COUNT(*) FROM t") == 9
            assert hops[0] == 1
            await tx.execute("UPDATE t SET v = $1 WHERE k = $2", "z", 0)
        assert hops[0] == 2  # the UPDATE went with COMMIT
        assert await db.fetchval("SELECT v FROM t WHERE k = 0") == "z"
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 9
    finally:
        await db.close()


async def test_failing_deferred_statement_rolls_back_everything(tmp_path) -> None:
    db = await _db(tmp_path)
    try:
        await db.execute("INSERT INTO t (k, v) VALUES (1, 'a')")
        with pytest.raises(UniqueViolation):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (k, v) VALUES (2, 'b')")
                await tx.execute("INSERT INTO t (k, v) VALUES (1, 'dup')")  # fails at COMMIT time
        with pytest.raises(UniqueViolation):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (k, v) VALUES (3, 'c')")
                await tx.execute("INSERT INTO t (k, v) VALUES (1, 'dup')")
                await tx.fetchval("SELECT 1")  # ... or at the next read
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 1
        # An exception in the body discards what was deferred.
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (k, v) VALUES (4, 'd')")
                raise RuntimeError("abandon")
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 1
        # The writer is usable afterwards.
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (k, v) VALUES (5, 'e')")
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 2
    finally:
        await db.close()
