"""Fixtures: the userapi on a fresh database (SQLite file, and PostgreSQL when
AXON_TEST_POSTGRES is set: a fresh schema prefix per test, dropped afterwards)."""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from libs.config import DatabaseConfig, HomeserverConfig
from libs.log.api import Producer
from libs.storage import Database, open_database
from services.userapi.internal import UserapiInternal
from services.userapi.service import MIGRATIONS_PACKAGE, UserapiService

PG_DSN = os.environ.get("AXON_TEST_POSTGRES")

ADAPTERS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[pytest.mark.postgres, pytest.mark.skipif(not PG_DSN, reason="AXON_TEST_POSTGRES not set")],
    ),
]


class RecordingProducer(Producer):
    """Keeps what was sent, in order, decoded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def send(self, topic: str, key: str, value: bytes, headers: dict[str, bytes] | None = None) -> None:
        self.sent.append((topic, key, json.loads(value)))


@pytest.fixture(params=ADAPTERS)
async def userapi_db(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Database]:
    kind = request.param
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    cfg = DatabaseConfig(
        kind=kind, sqlite_dir=str(tmp_path / "db"), postgres_dsn=PG_DSN or "",
        postgres_schema_prefix=prefix, pool_min_size=1, pool_max_size=4,
    )
    os.makedirs(cfg.sqlite_dir, exist_ok=True)
    db = await open_database(cfg, "userapi", MIGRATIONS_PACKAGE)
    yield db
    await db.close()
    if kind == "postgres":
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}userapi" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
def hs_config() -> HomeserverConfig:
    cfg = HomeserverConfig(server_name="test.local")
    cfg.registration.enabled = True
    cfg.rate_limiting.enabled = False
    return cfg


@pytest.fixture
def producer() -> RecordingProducer:
    return RecordingProducer()


@pytest.fixture
def userapi(userapi_db: Database, hs_config: HomeserverConfig, producer: RecordingProducer) -> UserapiInternal:
    service = UserapiService(hs_config, userapi_db, None, bcrypt_rounds=4)
    service.api.producer = producer
    return service.api
