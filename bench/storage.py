"""Storage micro benchmark: insert and select round trips on SQLite (and PostgreSQL
if AXON_TEST_POSTGRES is set). Run: .venv/bin/python -m bench.storage"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time

from libs.config import DatabaseConfig
from libs.storage import Database, open_database


async def _run(db: Database, label: str, n: int = 2000) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS b (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
    t0 = time.perf_counter()
    for i in range(n):
        await db.execute("INSERT INTO b (id, v) VALUES ($1, $2)", i, "x" * 64)
    t1 = time.perf_counter()
    for i in range(n):
        await db.fetchval("SELECT v FROM b WHERE id = $1", i)
    t2 = time.perf_counter()
    for i in range(n, n + n // 4):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO b (id, v) VALUES ($1, $2)", i, "y")
            await tx.fetchval("SELECT COUNT(*) FROM b WHERE id = $1", i)
    t3 = time.perf_counter()
    await db.executemany("INSERT INTO b (id, v) VALUES ($1, $2)", [(i, "z") for i in range(10**6, 10**6 + n)])
    t4 = time.perf_counter()

    async def reader() -> None:
        for i in range(n // 4):
            await db.fetchval("SELECT v FROM b WHERE id = $1", i)

    await asyncio.gather(*(reader() for _ in range(4)))
    t5 = time.perf_counter()
    us = lambda dt, k: f"{dt / k * 1e6:8.1f} us"  # noqa: E731
    print(f"{label:8} insert(autocommit) {us(t1 - t0, n)}  select {us(t2 - t1, n)}  "
          f"tx(insert+select+commit) {us(t3 - t2, n // 4)}  executemany/row {us(t4 - t3, n)}  "
          f"4 concurrent readers/select {us(t5 - t4, n)}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=d), "bench", None)
        await _run(db, "sqlite")
        await db.close()
    dsn = os.environ.get("AXON_TEST_POSTGRES")
    if dsn:
        cfg = DatabaseConfig(kind="postgres", postgres_dsn=dsn, postgres_schema_prefix="bench_")
        db = await open_database(cfg, "s", None)
        try:
            await db.execute("DROP TABLE IF EXISTS b")
            await _run(db, "postgres")
        finally:
            await db.execute("DROP SCHEMA bench_s CASCADE")
            await db.close()


if __name__ == "__main__":
    asyncio.run(main())
