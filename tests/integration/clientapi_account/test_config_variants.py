"""Behaviour under non-default configs: rate limits on, registration token required,
registration disabled (one app per config, built for this module)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio

from libs.config import HomeserverConfig, RateLimit
from tests.integration.clientapi_account.conftest import V3, build_app, make_config

pytestmark = pytest.mark.asyncio(loop_scope="module")



@pytest_asyncio.fixture(loop_scope="module")
async def make_client(tmp_path) -> AsyncIterator[Callable[..., object]]:
    opened = []

    async def factory(edit: Callable[[HomeserverConfig], None]) -> httpx.AsyncClient:
        cfg = make_config()
        edit(cfg)
        app, service, _ = await build_app(tmp_path / f"app{len(opened)}", cfg)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hs")
        opened.append((client, service))
        return client

    yield factory
    for client, service in opened:
        await client.aclose()
        await service.db.close()


async def test_rate_limited_login_and_register(make_client) -> None:
    def edit(cfg: HomeserverConfig) -> None:
        cfg.rate_limiting.enabled = True
        cfg.rate_limiting.login = RateLimit(per_second=0.1, burst=2)
        cfg.rate_limiting.register = RateLimit(per_second=0.1, burst=1)

    client = await make_client(edit)
    body = {"type": "m.login.password", "user": "nobody", "password": "x"}
    assert (await client.post(f"{V3}/login", json=body)).status_code == 403
    assert (await client.post(f"{V3}/login", json=body)).status_code == 403
    r = await client.post(f"{V3}/login", json=body)
    assert r.status_code == 429 and r.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert 0 < r.json()["retry_after_ms"] <= 10_000
    assert r.headers.get("Retry-After")
    reg = {"password": "pw", "auth": {"type": "m.login.dummy"}}
    assert (await client.post(f"{V3}/register", json={"username": "r1", **reg})).status_code == 200
    r = await client.post(f"{V3}/register", json={"username": "r2", **reg})
    assert r.status_code == 429 and r.json()["retry_after_ms"] > 0


async def test_registration_token_flow(make_client) -> None:
    def edit(cfg: HomeserverConfig) -> None:
        cfg.registration.require_token = True
        cfg.registration.registration_tokens = ["letmein"]

    client = await make_client(edit)
    r = await client.post(f"{V3}/register", json={"username": "tok", "password": "pw", "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNRECOGNIZED"
    assert r.json()["flows"] == [{"stages": ["m.login.registration_token"]}]
    session = r.json()["session"]
    r = await client.post(f"{V3}/register", json={"username": "tok", "password": "pw",
                                                  "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await client.post(f"{V3}/register", json={"username": "tok", "password": "pw",
                                                  "auth": {"type": "m.login.registration_token", "token": "letmein", "session": session}})
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == "@tok:test.local"


async def test_registration_disabled(make_client) -> None:
    def edit(cfg: HomeserverConfig) -> None:
        cfg.registration.enabled = False
        cfg.registration.allow_guests = False

    client = await make_client(edit)
    r = await client.post(f"{V3}/register", json={"username": "x", "password": "pw", "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await client.post(f"{V3}/register?kind=guest", json={})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
