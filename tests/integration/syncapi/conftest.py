"""Shared fixtures of the syncapi integration tests."""
from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from libs.config.model import DatabaseConfig
from libs.storage import open_database
from services.syncapi.storage.store import MIGRATIONS_PACKAGE
from tests.unit.syncapi.helpers import Harness, make_harness

PG = os.environ.get("AXON_TEST_POSTGRES")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def h(request: Any, tmp_path: Any) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        cfg = DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path))
        prefix = None
    else:
        if not PG:
            pytest.skip("AXON_TEST_POSTGRES not set")
        prefix = f"t{uuid.uuid4().hex[:10]}_"
        cfg = DatabaseConfig(kind="postgres", postgres_dsn=PG, postgres_schema_prefix=prefix)
    db = await open_database(cfg, "syncapi", MIGRATIONS_PACKAGE)
    try:
        yield await make_harness(db)
    finally:
        await db.close()
        if prefix:
            conn = await asyncpg.connect(PG)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}syncapi" CASCADE')
            await conn.close()
