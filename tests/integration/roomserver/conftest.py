"""Fixtures for the roomserver suite: a fresh roomserver database on SQLite (a file
in tmp_path) or PostgreSQL (AXON_TEST_POSTGRES, a throwaway schema per test)."""
from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from libs.config import DatabaseConfig
from libs.events.signing import SigningKey
from libs.storage import Database, open_database

from services.roomserver.input import RoomInputProcessor
from services.roomserver.storage.store import MIGRATIONS_PACKAGE, RoomserverStore

PG_DSN = os.environ.get("AXON_TEST_POSTGRES")
SERVER = "test.local"
SEED = bytes(range(32))

ADAPTERS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[pytest.mark.postgres, pytest.mark.skipif(not PG_DSN, reason="AXON_TEST_POSTGRES not set")],
    ),
]

DbOpener = Callable[[], Awaitable[Database]]


@pytest.fixture(params=ADAPTERS)
async def db_config(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[DatabaseConfig]:
    kind = request.param
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield DatabaseConfig(
        kind=kind, sqlite_dir=str(tmp_path / "db"), postgres_dsn=PG_DSN or "",
        postgres_schema_prefix=prefix, pool_min_size=1, pool_max_size=10,
    )
    if kind == "postgres":
        conn = await asyncpg.connect(PG_DSN)
        try:
            for (name,) in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", prefix + "%"
            ):
                await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def db(db_config: DatabaseConfig) -> AsyncIterator[Database]:
    database = await open_database(db_config, "roomserver", MIGRATIONS_PACKAGE)
    yield database
    await database.close()


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.from_seed(SEED, "test")


@pytest.fixture
def store(db: Database) -> RoomserverStore:
    return RoomserverStore(db)


@pytest.fixture
def processor(store: RoomserverStore, signing_key: SigningKey) -> RoomInputProcessor:
    return RoomInputProcessor(store, SERVER, signing_key)
