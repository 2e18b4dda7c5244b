"""Application services (mirrors SyTest 60app-services): registration files, as_token
auth and masquerading, exclusive namespaces, AS registration, alias queries, and the
transaction pushes of services/appservice to a real loopback HTTP server."""
from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from libs.config.loader import dev_config
from services.appservice.registration import RegistrationError, load_registry, parse_registration
from tests.ports import free_port as _free_port

AS_TOKEN = "as-secret-token"
HS_TOKEN = "hs-secret-token"
# Against the cluster (tests/cluster): the cluster was started with `registration()` for an
# AS on this port (AXON_TEST_AS_PORT); the fake AS of each test listens there.
_TARGET_URL = os.environ.get("AXON_TEST_BASE_URL") if os.environ.get("AXON_TEST_TARGET") == "cluster" else None


def registration(url: str) -> dict[str, Any]:
    """The registration file of the test AS (server name test.local)."""
    return {
        "id": "bridge", "url": url, "as_token": AS_TOKEN, "hs_token": HS_TOKEN,
        "sender_localpart": "bridgebot", "protocols": ["ymca"],
        "namespaces": {"users": [{"regex": "@bridge_.*:test.local", "exclusive": True},
                                 {"regex": "@_.*:test.local", "exclusive": False}],
                       "aliases": [{"regex": "#bridge_.*:test.local", "exclusive": True}], "rooms": []},
    }


def test_parse_registration_and_namespaces() -> None:
    svc = parse_registration({
        "id": "b", "url": None, "as_token": "a", "hs_token": "h", "sender_localpart": "bot",
        "namespaces": {"users": [{"regex": "@br_.*", "exclusive": True}, {"regex": "@_.*:x", "exclusive": False}],
                       "aliases": [{"regex": "#br_.*", "exclusive": True}]},
    }, "x")
    assert svc.sender == "@bot:x" and svc.url is None
    assert svc.is_interested_in_user("@br_1:x") and svc.is_interested_in_user("@bot:x")
    assert not svc.is_interested_in_user("@alice:x")
    assert svc.is_interested_in_event({"sender": "@alice:x", "type": "m.room.member", "state_key": "@br_2:x"})
    assert svc.is_interested_in_event({"sender": "@alice:x", "type": "m.room.message"}, ["#br_room:x"])
    assert not svc.is_interested_in_event({"sender": "@alice:x", "type": "m.room.message"}, ["#other:x"])
    for bad in ({"id": "b"}, {"id": "b", "as_token": "a", "hs_token": "h", "sender_localpart": "s",
                              "namespaces": {"users": [{"regex": "("}]}}):
        with pytest.raises(RegistrationError):
            parse_registration(bad, "x")



class FakeAS:
    """A loopback application service recording what the homeserver sends it."""

    def __init__(self) -> None:
        self.txns: list[tuple[str, dict[str, Any], str | None]] = []
        self.queries: list[str] = []
        self.fail_next = 0
        self.failed_at: list[int] = []  # indexes into txns of the attempts answered with a 500
        self.protocol_answers: list[Any] = [{"user_fields": ["f"], "location_fields": [], "icon": "mxc://a/b",
                                             "instances": [{"desc": "one"}]}]
        self.lookups: list[tuple[dict[str, str], str | None]] = []
        self.app = FastAPI()

        @self.app.put("/_matrix/app/v1/transactions/{txn_id}")
        async def txn(txn_id: str, request: Request) -> Any:
            from fastapi.responses import JSONResponse
            self.txns.append((txn_id, json.loads(await request.body()), request.headers.get("authorization")))
            if self.fail_next:
                self.fail_next -= 1
                self.failed_at.append(len(self.txns) - 1)
                return JSONResponse({"errcode": "M_UNKNOWN"}, status_code=500)
            return {}

        @self.app.get("/_matrix/app/v1/thirdparty/protocol/{protocol}")
        async def protocol(protocol: str) -> Any:
            self.queries.append(f"protocol:{protocol}")
            if self.protocol_answers:
                return self.protocol_answers.pop(0)
            return []  # a broken answer: the cached one is kept

        @self.app.get("/_matrix/app/v1/thirdparty/user/{protocol}")
        async def tp_user(protocol: str, request: Request) -> Any:
            self.lookups.append((dict(request.query_params), request.headers.get("authorization")))
            return [{"protocol": protocol, "fields": {"f": "x"}, "userid": "@remote:bridged.example"}]

        @self.app.get("/_matrix/app/v1/users/{user_id}")
        async def user_query(user_id: str) -> Any:
            from fastapi.responses import JSONResponse
            self.queries.append(user_id)
            return JSONResponse({"errcode": "M_NOT_FOUND"}, status_code=404)

        @self.app.get("/_matrix/app/v1/rooms/{alias}")
        async def room_query(alias: str) -> Any:
            from fastapi.responses import JSONResponse
            self.queries.append(alias)
            return JSONResponse({"errcode": "M_NOT_FOUND"}, status_code=404)


@pytest.fixture
async def as_env(tmp_path):
    fake = FakeAS()
    port = int(os.environ["AXON_TEST_AS_PORT"]) if _TARGET_URL else _free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", access_log=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    if _TARGET_URL:
        client = httpx.AsyncClient(base_url=_TARGET_URL, timeout=60)
        try:
            yield None, client, fake
        finally:
            await client.aclose()
            server.should_exit = True
            await task
        return
    reg = tmp_path / "as.yaml"
    reg.write_text(json.dumps(registration(f"http://127.0.0.1:{port}")))
    cfg = dev_config(str(tmp_path / "hs"))
    cfg.server_name = "test.local"
    cfg.logging.level = "WARNING"
    cfg.app_service_config_files = [str(reg)]
    cfg.appservice.retry_initial_backoff_s = 0.05
    from axon.embedded import build_homeserver

    hs = await build_homeserver(cfg, bcrypt_rounds=4)
    await hs.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hs.app), base_url="http://hs", timeout=30)
    try:
        yield hs, client, fake
    finally:
        await client.aclose()
        await hs.stop()
        server.should_exit = True
        await task


async def _call(client: httpx.AsyncClient, method: str, path: str, token: str | None, expect: int = 200,
                **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await client.request(method, "/_matrix/client/v3" + path, headers=headers, **kw)
    assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
    return r.json()


async def _user(client: httpx.AsyncClient, name: str) -> str:
    if _TARGET_URL:  # one long-lived server for the whole suite
        name = f"{name}-{uuid.uuid4().hex[:6]}"
    b = await _call(client, "POST", "/register", None, json={"username": name, "password": "pw-pw-pw-pw",
                                                              "auth": {"type": "m.login.dummy"}})
    return str(b["access_token"])


async def test_registration_and_masquerading(as_env) -> None:
    _hs, client, _fake = as_env
    b = await _call(client, "POST", "/register", AS_TOKEN,
                    json={"username": "bridge_one", "type": "m.login.application_service"})
    assert b["user_id"] == "@bridge_one:test.local" and b["access_token"]
    b = await _call(client, "POST", "/register", AS_TOKEN, json={
        "username": "bridge_two", "type": "m.login.application_service", "inhibit_login": True})
    assert "access_token" not in b
    r = await _call(client, "POST", "/register", AS_TOKEN, 400,
                    json={"username": "someone", "type": "m.login.application_service"})
    assert r["errcode"] == "M_EXCLUSIVE"
    r = await _call(client, "POST", "/register", None, 400, json={
        "username": "bridge_three", "password": "pw-pw-pw-pw", "auth": {"type": "m.login.dummy"}})
    assert r["errcode"] == "M_EXCLUSIVE"
    await _call(client, "POST", "/register", None, 401,
                json={"username": "bridge_four", "type": "m.login.application_service"})
    # the sender exists from the start; masquerading needs a registered user of the namespace
    who = await _call(client, "GET", "/account/whoami", AS_TOKEN)
    assert who["user_id"] == "@bridgebot:test.local"
    who = await _call(client, "GET", "/account/whoami?user_id=%40bridge_one%3Atest.local", AS_TOKEN)
    assert who["user_id"] == "@bridge_one:test.local"
    r = await _call(client, "GET", "/account/whoami?user_id=%40bridge_nobody%3Atest.local", AS_TOKEN, 403)
    assert r["errcode"] == "M_FORBIDDEN"
    r = await _call(client, "GET", "/account/whoami?user_id=%40alice%3Atest.local", AS_TOKEN, 403)
    assert r["errcode"] == "M_EXCLUSIVE"
    # '_' localparts are for ASes only
    b = await _call(client, "POST", "/register", AS_TOKEN,
                    json={"username": "_under", "type": "m.login.application_service"})
    assert b["user_id"] == "@_under:test.local"
    r = await _call(client, "POST", "/register", None, 400, json={
        "username": "_other", "password": "pw-pw-pw-pw", "auth": {"type": "m.login.dummy"}})
    assert r["errcode"] == "M_INVALID_USERNAME"
    # the AS deactivates its users without user-interactive auth
    await _call(client, "POST", "/account/deactivate?user_id=%40bridge_one%3Atest.local", AS_TOKEN, json={})
    r = await _call(client, "GET", "/account/whoami?user_id=%40bridge_one%3Atest.local", AS_TOKEN, 403)
    assert r["errcode"] == "M_FORBIDDEN"
    # a normal user still needs UIA
    alice = await _user(client, "alice2")
    await _call(client, "POST", "/account/deactivate", alice, 401, json={})


async def test_aliases_and_transactions(as_env) -> None:
    _hs, client, fake = as_env
    alice = await _user(client, "alice")
    room = (await _call(client, "POST", "/createRoom", alice, json={"preset": "public_chat"}))["room_id"]
    alias = quote("#bridge_room:test.local")
    r = await _call(client, "PUT", f"/directory/room/{alias}", alice, 400, json={"room_id": room})
    assert r["errcode"] == "M_EXCLUSIVE"
    await _call(client, "PUT", f"/directory/room/{alias}", AS_TOKEN, json={"room_id": room})
    # an unknown alias of the namespace is asked of the AS
    await _call(client, "GET", f"/directory/room/{quote('#bridge_unknown:test.local')}", None, 404)
    assert fake.queries == ["#bridge_unknown:test.local"]
    # inviting an unknown user of the namespace asks the AS first
    await _call(client, "POST", f"/rooms/{room}/invite", alice, json={"user_id": "@bridge_new:test.local"})
    assert fake.queries[-1] == "@bridge_new:test.local"

    fake.fail_next = 1  # the first attempt fails: the same transaction is retried
    txn = await _call(client, "PUT", f"/rooms/{room}/send/m.room.message/t1", alice,
                      json={"msgtype": "m.text", "body": "for the bridge"})
    for _ in range(200):
        if fake.failed_at and len(fake.txns) > fake.failed_at[0] + 1 and any(
                e.get("event_id") == txn["event_id"] for e in fake.txns[-1][1]["events"]):
            break
        await asyncio.sleep(0.05)
    ids = [t[0] for t in fake.txns]
    assert all(i.isdigit() for i in ids)
    assert fake.txns[0][2] == f"Bearer {HS_TOKEN}"
    # The failed attempt may carry the invite sent just before (delivery is asynchronous); whatever it
    # carried, the next attempt is the same transaction again.
    assert len(fake.failed_at) == 1
    failed, retried = fake.txns[fake.failed_at[0]], fake.txns[fake.failed_at[0] + 1]
    assert failed[0] == retried[0] and failed[1] == retried[1]  # same ID, same events
    events = [e for t in fake.txns for e in t[1]["events"]]
    msg = next(e for e in events if e.get("event_id") == txn["event_id"])
    assert msg["room_id"] == room and msg["content"]["body"] == "for the bridge"


async def test_thirdparty_lookups(as_env) -> None:
    _hs, client, fake = as_env
    alice = await _user(client, "carol")
    expected = {"user_fields": ["f"], "location_fields": [], "icon": "mxc://a/b", "instances": [{"desc": "one"}]}
    assert await _call(client, "GET", "/thirdparty/protocols", alice) == {"ymca": expected}
    # answered from the cache although the AS now answers nonsense
    assert await _call(client, "GET", "/thirdparty/protocol/ymca", alice) == expected
    r = await _call(client, "GET", "/thirdparty/protocol/nope", alice, 404)
    assert r["errcode"] == "M_NOT_FOUND"
    got = await _call(client, "GET", "/thirdparty/user/ymca?f=ONE", alice)
    assert got == [{"protocol": "ymca", "fields": {"f": "x"}, "userid": "@remote:bridged.example"}]
    assert fake.lookups[-1] == ({"f": "ONE"}, f"Bearer {HS_TOKEN}")


async def test_appservice_room_directory(as_env) -> None:
    _hs, client, _fake = as_env
    alice = await _user(client, "dave")
    room = (await _call(client, "POST", "/createRoom", alice,
                        json={"preset": "public_chat", "visibility": "private"}))["room_id"]
    instance = "bridge|net"

    async def listed(body: dict[str, Any]) -> bool:
        got = await _call(client, "POST", "/publicRooms", alice, json=body)
        return any(e["room_id"] == room for e in got["chunk"])

    r = await _call(client, "PUT", f"/directory/list/appservice/net/{room}", alice, 403, json={"visibility": "public"})
    assert r["errcode"] == "M_FORBIDDEN"  # only the AS itself
    await _call(client, "PUT", f"/directory/list/appservice/net/{room}", AS_TOKEN, json={"visibility": "public"})
    assert not await listed({})  # the main list stays separate
    assert await listed({"third_party_instance_id": instance})
    assert await listed({"include_all_networks": True})
    await _call(client, "DELETE", f"/directory/list/appservice/net/{room}", AS_TOKEN)
    assert not await listed({"third_party_instance_id": instance})
