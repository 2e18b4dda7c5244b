"""Shared end-to-end harness: a whole homeserver, driven over its HTTP API.

Fixtures:
- `homeserver`: an embedded Axon (every service in one process, SQLite + the
  embedded durable log) in a temp dir, started; yields the `Homeserver`.
- `client`: an `httpx.AsyncClient` bound to that homeserver's ASGI app.
- `matrix`: a `MatrixTestClient` helper (register users, create rooms, send, sync).
- `live_server`: the same homeserver served by uvicorn on a free loopback port
  (for real client libraries such as matrix-nio); yields its base URL.

Set AXON_TEST_MODE=cluster-postgres to run the same tests with PostgreSQL
(AXON_TEST_POSTGRES) instead of SQLite; the cluster harness of the cluster issue
adds Kafka and one process per service.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from libs.config.loader import dev_config
from tests.ports import free_port as _free_port


def _config(tmp_path):
    cfg = dev_config(str(tmp_path / "hs"))
    cfg.server_name = "test.local"
    cfg.logging.level = "WARNING"
    if os.environ.get("AXON_TEST_MODE") == "postgres" and os.environ.get("AXON_TEST_POSTGRES"):
        cfg.database.kind = "postgres"
        cfg.database.postgres_dsn = os.environ["AXON_TEST_POSTGRES"]
        cfg.database.postgres_schema_prefix = f"t{uuid.uuid4().hex[:10]}_"
    return cfg


# Set by tests/cluster (AXON_TEST_TARGET=cluster): `client`, `matrix` and `live_server`
# then talk real HTTP to that base URL (the cluster's router) instead of an embedded app.
_TARGET_URL = os.environ.get("AXON_TEST_BASE_URL") if os.environ.get("AXON_TEST_TARGET") == "cluster" else None


@pytest.fixture
async def homeserver(tmp_path, request):
    if _TARGET_URL:  # the homeserver under test runs elsewhere
        fn = getattr(request.node, "function", None)
        if fn is not None and "homeserver" in inspect.signature(fn).parameters:
            pytest.skip("reaches into the in-process homeserver (embedded mode only)")
        yield None
        return
    from axon.embedded import build_homeserver

    hs = await build_homeserver(_config(tmp_path), bcrypt_rounds=4)
    await hs.start()
    try:
        yield hs
    finally:
        await hs.stop()


@pytest.fixture
async def client(homeserver):
    if _TARGET_URL:
        async with httpx.AsyncClient(base_url=_TARGET_URL, timeout=60) as c:
            yield c
        return
    transport = httpx.ASGITransport(app=homeserver.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hs", timeout=30) as c:
        yield c


@dataclass
class User:
    user_id: str
    access_token: str
    device_id: str
    headers: dict[str, str] = field(default_factory=dict)


class MatrixTestClient:
    """Thin helpers over the Client-Server API; every call asserts its status."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self._txn = 0

    async def register(self, localpart: str | None = None, password: str = "correct horse battery") -> User:
        if localpart and _TARGET_URL:  # one long-lived server for every test: keep names apart
            localpart = f"{localpart}-{uuid.uuid4().hex[:6]}"
        localpart = localpart or f"u{uuid.uuid4().hex[:8]}"
        r = await self.http.post("/_matrix/client/v3/register", json={
            "username": localpart, "password": password, "auth": {"type": "m.login.dummy"}})
        assert r.status_code == 200, r.text
        b = r.json()
        return User(b["user_id"], b["access_token"], b["device_id"],
                    {"Authorization": f"Bearer {b['access_token']}"})

    async def request(self, user: User | None, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if user is not None:
            headers.update(user.headers)
        r = await self.http.request(method, "/_matrix/client/v3" + path, headers=headers, **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    async def create_room(self, user: User, **body: Any) -> str:
        return (await self.request(user, "POST", "/createRoom", json=body))["room_id"]

    async def send(self, user: User, room_id: str, body: str = "hi", event_type: str = "m.room.message",
                   content: dict[str, Any] | None = None) -> str:
        self._txn += 1
        content = content if content is not None else {"msgtype": "m.text", "body": body}
        r = await self.request(user, "PUT", f"/rooms/{room_id}/send/{event_type}/t{self._txn}", json=content)
        return r["event_id"]

    async def join(self, user: User, room: str) -> str:
        return (await self.request(user, "POST", f"/join/{quote(room, safe='')}", json={}))["room_id"]

    async def sync(self, user: User, since: str | None = None, timeout: int = 0, **params: Any) -> dict[str, Any]:
        q: dict[str, Any] = {"timeout": timeout, **params}
        if since:
            q["since"] = since
        return await self.request(user, "GET", "/sync", params=q)

    async def sync_until(self, user: User, predicate, since: str | None = None, attempts: int = 20) -> dict[str, Any]:
        """Long-poll /sync until `predicate(response)` holds; returns that response."""
        for _ in range(attempts):
            resp = await self.sync(user, since, timeout=1000)
            if predicate(resp):
                return resp
            since = resp["next_batch"]
        raise AssertionError("sync condition not met")


@pytest.fixture
async def matrix(client) -> MatrixTestClient:
    return MatrixTestClient(client)



@pytest.fixture
async def live_server(homeserver):
    if _TARGET_URL:
        yield _TARGET_URL
        return
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(homeserver.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", access_log=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
