from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.syncapi.helpers import Harness, make_harness, sqlite_db


@pytest.fixture
async def h(tmp_path: Any) -> AsyncIterator[Harness]:
    db = await sqlite_db(tmp_path)
    try:
        yield await make_harness(db)
    finally:
        await db.close()
