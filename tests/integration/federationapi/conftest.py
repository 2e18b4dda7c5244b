import pytest

from libs.config.model import DatabaseConfig
from libs.storage import open_database
from services.federationapi.storage.store import MIGRATIONS, FederationStore


@pytest.fixture
async def fed_store():
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=":memory:"), "federationapi", MIGRATIONS)
    try:
        yield FederationStore(db)
    finally:
        await db.close()
