"""An ASGI app made of the account routers + libs.http error handlers, on a fresh
SQLite userapi database, driven with httpx.AsyncClient.

Building the FastAPI app costs ~1 s (route analysis), so each test module shares one
app and database (`hs` is module-scoped): tests use their own user names. Modules
mark themselves `pytestmark = pytest.mark.asyncio(loop_scope="module")` and may
override the module-scoped `config_edit` fixture."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from libs.config import DatabaseConfig, HomeserverConfig
from libs.http import install_error_handlers
from libs.ratelimit import RateLimiter
from libs.storage import open_database
from services.clientapi.routes.account_routers import build_account_routers
from services.clientapi.routes.common import AccountRoutesContext
from services.userapi.service import MIGRATIONS_PACKAGE, UserapiService

SERVER = "test.local"
V3 = "/_matrix/client/v3"


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    service: UserapiService
    config: HomeserverConfig
    limiter: RateLimiter

    async def register(self, username: str, password: str = "pw", **extra: Any) -> dict[str, Any]:
        r = await self.client.post(
            f"{V3}/register",
            json={"username": username, "password": password, "auth": {"type": "m.login.dummy"}, **extra},
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def login(self, username: str, password: str = "pw", **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"{V3}/login",
            json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": username},
                  "password": password, **extra},
        )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_config() -> HomeserverConfig:
    cfg = HomeserverConfig(server_name=SERVER, public_baseurl="https://hs.test.local/")
    cfg.registration.enabled = True
    cfg.registration.allow_guests = True
    cfg.rate_limiting.enabled = False
    return cfg


async def build_app(tmp_path: Any, config: HomeserverConfig) -> tuple[FastAPI, UserapiService, RateLimiter]:
    db_dir = os.path.join(str(tmp_path), "db")
    os.makedirs(db_dir, exist_ok=True)
    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=db_dir), "userapi", MIGRATIONS_PACKAGE)
    service = UserapiService(config, db, None, bcrypt_rounds=4)
    limiter = RateLimiter(config.rate_limiting)
    ctx = AccountRoutesContext(config=config, userapi=service.api, auth=service.client_auth, ratelimiter=limiter)
    app = FastAPI()
    install_error_handlers(app)
    for router in build_account_routers(ctx):
        app.include_router(router)
    return app, service, limiter


ConfigEdit = Callable[[HomeserverConfig], None]


@pytest.fixture(scope="module")
def config_edit() -> ConfigEdit:
    """Override in a test module to change the config before the app is built."""
    return lambda cfg: None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hs(tmp_path_factory: pytest.TempPathFactory, config_edit: ConfigEdit) -> AsyncIterator[Harness]:
    cfg = make_config()
    config_edit(cfg)
    app, service, limiter = await build_app(tmp_path_factory.mktemp("hs"), cfg)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hs") as client:
        yield Harness(app, client, service, cfg, limiter)
    await service.db.close()
