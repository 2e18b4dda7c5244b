"""SQLite-specific behaviour (in-memory and temp files; no services)."""
from __future__ import annotations

import asyncio

import pytest

from libs.config import DatabaseConfig
from libs.storage import DatabaseUnavailable, SqliteDatabase, open_database


async def test_in_memory_database_works() -> None:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=":memory:"), "mem", None)
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT)")
        await db.execute("INSERT INTO t VALUES ($1, $2)", "a", 1)
        assert await db.fetchval("SELECT v FROM t WHERE k = $1", "a") == 1
    finally:
        await db.close()


async def test_pragmas_wal_and_configured_sync(tmp_path) -> None:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "p", None)
    try:
        assert (tmp_path / "p.db").exists()
        assert await db.fetchval("PRAGMA journal_mode") == "wal"
        assert await db.fetchval("PRAGMA synchronous") == 1  # NORMAL: the default (kill -9 safe)
    finally:
        await db.close()
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path),
                                            sqlite_synchronous="full"), "f", None)
    try:
        assert await db.fetchval("PRAGMA synchronous") == 2  # FULL (power-loss safe)
    finally:
        await db.close()
    with pytest.raises(ValueError):
        SqliteDatabase(str(tmp_path / "x.db"), "x", synchronous="OFF")


async def test_write_through_db_inside_own_transaction_raises_not_deadlocks(tmp_path) -> None:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "d", None)
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(RuntimeError, match="transaction"):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ($1)", 1)
                await asyncio.wait_for(db.execute("INSERT INTO t VALUES ($1)", 2), 2)
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 0
    finally:
        await db.close()


async def test_reads_see_only_committed_data_and_reader_is_read_only(tmp_path) -> None:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "r", None)
    assert isinstance(db, SqliteDatabase)
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES ($1)", 1)
            assert await db.fetchval("SELECT COUNT(*) FROM t") == 0
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 1
        # A write that looks like a read goes to the writer, and still works.
        assert await db.fetchval("INSERT INTO t VALUES ($1) RETURNING x", 5) == 5
    finally:
        await db.close()


async def test_cancelled_transaction_rolls_back(tmp_path) -> None:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "c", None)
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        started = asyncio.Event()

        async def body() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ($1)", 1)
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(body())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await db.execute("INSERT INTO t VALUES ($1)", 2)
        assert [r[0] for r in await db.fetch("SELECT x FROM t")] == [2]
    finally:
        await db.close()


async def test_closed_database_is_unavailable(tmp_path) -> None:
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "z", None)
    await db.close()
    with pytest.raises(DatabaseUnavailable):
        await db.execute("SELECT 1")


async def test_invalid_service_name_rejected(tmp_path) -> None:
    with pytest.raises(ValueError):
        await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "../x", None)
    with pytest.raises(ValueError):
        await open_database(DatabaseConfig(kind="mysql"), "x", None)
