"""The HTTP edge: /sync, /messages, /context, /members over FastAPI (httpx ASGI transport)."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from libs.config.model import HomeserverConfig
from libs.errors import missing_token, unknown_token
from libs.http.errors import install_error_handlers
from services.syncapi.service import SyncService
from tests.unit.syncapi.helpers import FakeDevice, FakeRoom, FakeRoomserver, FakeUserAPI, sqlite_db

A, B = "@alice:test.local", "@bob:test.local"


@pytest.fixture
async def svc(tmp_path: Any) -> AsyncIterator[tuple[SyncService, httpx.AsyncClient, FakeUserAPI]]:
    db = await sqlite_db(tmp_path)
    ua = FakeUserAPI()
    ua.add_user(B, "BDEV", "tok-b")
    ua.add_user(A, "ADEV", "tok-a")

    async def auth(request: Request) -> FakeDevice:
        h = request.headers.get("authorization", "")
        if not h.startswith("Bearer "):
            raise missing_token()
        dev = await ua.query_access_token(h[7:])
        if dev is None:
            raise unknown_token()
        return dev

    service = SyncService(HomeserverConfig(), db, None, roomserver=FakeRoomserver(), userapi=ua,  # type: ignore[arg-type]
                          auth=auth)  # type: ignore[arg-type]
    await service.start()
    app = FastAPI()
    install_error_handlers(app)
    for r in service.routers:
        app.include_router(r)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                               headers={"Authorization": "Bearer tok-b"})
    try:
        yield service, client, ua
    finally:
        await client.aclose()
        await service.stop()
        await db.close()


async def test_sync_http_initial_incremental_longpoll(svc) -> None:
    service, client, _ = svc
    room = FakeRoom("!h:test.local")
    for rec in room.create(A) + [room.join(B), room.msg(A, "hi")]:
        await service.projector.on_output(rec)
    r = await client.get("/_matrix/client/v3/sync")
    assert r.status_code == 200
    body = r.json()
    assert room.room_id in body["rooms"]["join"]
    since = body["next_batch"]

    async def later() -> None:
        await asyncio.sleep(0.05)
        await service.projector.on_output(room.msg(A, "pushed"))

    t = asyncio.create_task(later())
    t0 = time.perf_counter()
    r = await client.get("/_matrix/client/r0/sync", params={"since": since, "timeout": "5000"})
    await t
    assert r.status_code == 200
    assert time.perf_counter() - t0 < 1.0
    evs = r.json()["rooms"]["join"][room.room_id]["timeline"]["events"]
    assert [e["content"]["body"] for e in evs] == ["pushed"]
    # Filter as inline JSON and as a stored filter ID.
    r = await client.get("/_matrix/client/v3/sync", params={"filter": json.dumps({"room": {"timeline": {"limit": 1}}})})
    assert len(r.json()["rooms"]["join"][room.room_id]["timeline"]["events"]) == 1
    svc[2].filters[(B, "7")] = {"room": {"rooms": []}}
    r = await client.get("/_matrix/client/v3/sync", params={"filter": "7"})
    assert r.json()["rooms"]["join"] == {}


@pytest.mark.parametrize("params,errcode", [
    ({"since": "garbage"}, "M_INVALID_PARAM"),
    ({"timeout": "abc"}, "M_INVALID_PARAM"),
    ({"filter": "{not json"}, "M_INVALID_PARAM"),
    ({"filter": json.dumps({"room": {"timeline": {"limit": "x"}}})}, "M_INVALID_PARAM"),
    ({"filter": "unknown-id"}, "M_INVALID_PARAM"),
    ({"full_state": "maybe"}, "M_INVALID_PARAM"),
    ({"set_presence": "dancing"}, "M_INVALID_PARAM"),
    ({"filter": "{" + "[" * 15000}, "M_INVALID_PARAM"),
    ({"filter": json.dumps({"room": {"timeline": []}})}, "M_INVALID_PARAM"),
    ({"filter": json.dumps({"event_fields": [1]})}, "M_INVALID_PARAM"),
])
async def test_sync_bad_input_is_400(svc, params, errcode) -> None:
    _, client, _ = svc
    r = await client.get("/_matrix/client/v3/sync", params=params)
    assert r.status_code == 400 and r.json()["errcode"] == errcode


async def test_auth_errors(svc) -> None:
    _, client, _ = svc
    r = await client.get("/_matrix/client/v3/sync", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.get("/_matrix/client/v3/sync", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"


async def test_messages_context_members_http(svc) -> None:
    service, client, _ = svc
    room = FakeRoom("!m:test.local")
    for rec in room.create(A) + [room.join(B)] + [room.msg(A, f"x{i}") for i in range(5)]:
        await service.projector.on_output(rec)
    r = await client.get(f"/_matrix/client/v3/rooms/{room.room_id}/messages", params={"dir": "b", "limit": "2"})
    assert r.status_code == 200
    page = r.json()
    assert [e["content"]["body"] for e in page["chunk"]] == ["x4", "x3"] and "end" in page
    assert page["chunk"][0]["room_id"] == room.room_id
    r = await client.get(f"/_matrix/client/v3/rooms/{room.room_id}/messages",
                         params={"dir": "b", "from": page["end"], "limit": "2"})
    assert [e["content"]["body"] for e in r.json()["chunk"]] == ["x2", "x1"]
    for bad in ({"dir": "x"}, {"from": "zz"}, {"limit": "many"}, {"filter": "[1"}):
        r = await client.get(f"/_matrix/client/v3/rooms/{room.room_id}/messages", params=bad)
        assert r.status_code == 400, bad
    r = await client.get("/_matrix/client/v3/rooms/!nope:test.local/messages")
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await client.get(f"/_matrix/client/v3/rooms/{room.room_id}/context/{room.last[-3]}", params={"limit": "2"})
    assert r.status_code == 200 and r.json()["event"]["content"]["body"] == "x2"
    r = await client.get(f"/_matrix/client/v3/rooms/{room.room_id}/context/$missing")
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await client.get(f"/_matrix/client/v3/rooms/{room.room_id}/members", params={"membership": "join"})
    assert {e["state_key"] for e in r.json()["chunk"]} == {A, B}
    r = await client.get(f"/_matrix/client/v3/rooms/{room.room_id}/joined_members")
    assert set(r.json()["joined"]) == {A, B}
    r = await client.get("/_matrix/client/v3/rooms/!nope:test.local/joined_members")
    assert r.status_code == 403
