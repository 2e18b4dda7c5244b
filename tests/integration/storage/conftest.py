"""Fixtures: open a fresh database per test on either adapter.

SQLite: a file in tmp_path. PostgreSQL (AXON_TEST_POSTGRES): a fresh schema
prefix per test, dropped afterwards, so runs never collide."""
from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from libs.config import DatabaseConfig
from libs.storage import Database, open_database

PG_DSN = os.environ.get("AXON_TEST_POSTGRES")
MIG = "tests.integration.storage.mig_basic"

ADAPTERS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_DSN, reason="AXON_TEST_POSTGRES not set"),
        ],
    ),
]

Opener = Callable[..., Awaitable[Database]]


@pytest.fixture(params=ADAPTERS)
async def open_db(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Opener]:
    """`await open_db(service="svc", migrations=MIG)` opens (and tracks) a database."""
    kind = request.param
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    cfg = DatabaseConfig(
        kind=kind,
        sqlite_dir=str(tmp_path / "db"),
        postgres_dsn=PG_DSN or "",
        postgres_schema_prefix=prefix,
        pool_min_size=1,
        pool_max_size=5,
    )
    opened: list[Database] = []

    async def opener(service: str = "svc", migrations: str | None = MIG, **over) -> Database:
        c = DatabaseConfig(**{**cfg.__dict__, **over})
        db = await open_database(c, service, migrations)
        opened.append(db)
        return db

    opener.config = cfg  # type: ignore[attr-defined]
    yield opener
    for db in opened:
        await db.close()
    if kind == "postgres":
        conn = await asyncpg.connect(PG_DSN)
        try:
            names = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", prefix + "%"
            )
            for (name,) in names:
                await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def db(open_db: Opener) -> Database:
    return await open_db()
