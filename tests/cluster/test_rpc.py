"""libs/rpc: a Protocol served over HTTP and called through the generic client (pure:
ASGI transport, plus one real socket for connection fail-over)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import httpx
import pytest
from fastapi import FastAPI

from libs.errors import MatrixError, forbidden
from libs.http import install_error_handlers
from libs.log.api import LogError
from libs.metrics import RequestIdMiddleware
from libs.metrics.logs import bind_request_id, current_request_id
from libs.storage.errors import DatabaseUnavailable
from libs.rpc import RpcClient, ServiceUnavailable, decode, encode, rpc_router
from services.roomserver.api import CreateRoomRequest, RoomMembership, RoomserverAPI
from services.userapi.api import Device
from tests.ports import free_port as _free_port


@dataclass
class Item:
    name: str
    tags: list[str] = field(default_factory=list)
    owner: Device | None = None


class DemoAPI(Protocol):
    async def echo(self, item: Item, times: int = 1) -> list[Item]: ...
    async def state(self, room_id: str) -> dict[tuple[str, str], dict[str, Any]]: ...
    async def maybe(self, key: str) -> str | None: ...
    async def fail(self, code: str) -> None: ...
    async def get_rid(self) -> str | None: ...
    async def add(self, memberships: tuple[str, ...] = ("join",)) -> int: ...


class Demo:
    def __init__(self) -> None:
        self.calls = 0

    async def echo(self, item: Item, times: int = 1) -> list[Item]:
        assert isinstance(item, Item) and (item.owner is None or isinstance(item.owner, Device))
        return [item] * times

    async def state(self, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {("m.room.member", "@a:x"): {"room_id": room_id}, ("m.room.create", ""): {"n": 1}}

    async def maybe(self, key: str) -> str | None:
        return None if key == "none" else key.upper()

    async def fail(self, code: str) -> None:
        if code == "forbidden":
            raise forbidden("nope", extra_field=7)
        if code == "uia":
            raise MatrixError(401, "M_FORBIDDEN", "stage", flows=[{"stages": ["m.login.dummy"]}], session="s1")
        if code == "uia-first":
            from services.userapi.uia import UIARequired

            raise UIARequired([["m.login.password"]], "sess", [], {})
        if code == "log":
            raise LogError("send to roomserver.input failed: broker unreachable")
        if code == "db":
            raise DatabaseUnavailable("connection refused")
        raise RuntimeError("boom")

    async def get_rid(self) -> str | None:
        return current_request_id()

    async def add(self, memberships: tuple[str, ...] = ("join",)) -> int:
        self.calls += 1
        assert isinstance(memberships, tuple)
        return len(memberships)


def _app(impl: Any, secret: str = "s3cret") -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(rpc_router("demo", DemoAPI, impl, secret=secret))
    app.add_middleware(RequestIdMiddleware)
    return app


@pytest.fixture
async def demo():
    impl = Demo()
    client = RpcClient("demo", DemoAPI, ["http://a", "http://b"], secret="s3cret",
                       transport=httpx.ASGITransport(app=_app(impl)))
    yield cast(Any, client), impl
    await client.aclose()


async def test_round_trip_dataclasses_and_tuple_keys(demo):
    api, _ = demo
    got = await api.echo(Item("x", ["a"], Device("@u:x", "D1", is_guest=True)), times=2)
    assert got == [Item("x", ["a"], Device("@u:x", "D1", is_guest=True))] * 2
    st = await api.state("!r:x")
    assert st[("m.room.member", "@a:x")] == {"room_id": "!r:x"} and ("m.room.create", "") in st
    assert await api.maybe("none") is None and await api.maybe("q") == "Q"
    assert await api.add() == 1 and await api.add(("join", "invite")) == 2


async def test_matrix_error_crosses_the_wire(demo):
    api, _ = demo
    with pytest.raises(MatrixError) as e:
        await api.fail("forbidden")
    assert (e.value.status, e.value.errcode, e.value.error, e.value.extra) == (403, "M_FORBIDDEN", "nope",
                                                                              {"extra_field": 7})
    with pytest.raises(MatrixError) as e:
        await api.fail("uia")
    assert e.value.status == 401 and e.value.to_json()["session"] == "s1"
    # A body of another shape (the first UIA 401 has no errcode) arrives unchanged.
    with pytest.raises(MatrixError) as e:
        await api.fail("uia-first")
    assert e.value.status == 401
    assert e.value.to_json() == {"flows": [{"stages": ["m.login.password"]}], "params": {}, "session": "sess",
                                 "completed": []}


async def test_unexpected_server_error_is_503_not_a_crash(demo):
    api, _ = demo
    with pytest.raises(ServiceUnavailable) as e:
        await api.fail("other")
    assert e.value.status == 503 and e.value.errcode == "M_UNKNOWN"


async def test_infrastructure_outages_are_retryable_503s_with_an_errcode(demo):
    """The broker or the database being away inside the called service is a 503 M_UNKNOWN
    (a MatrixError the caller passes on), never an internal error."""
    api, _ = demo
    for code, text in (("log", "event log unavailable"), ("db", "database unavailable")):
        with pytest.raises(MatrixError) as e:
            await api.fail(code)
        assert (e.value.status, e.value.errcode, e.value.error) == (503, "M_UNKNOWN", text)


async def test_request_id_propagates(demo):
    api, _ = demo
    with bind_request_id("rid-123"):
        assert await api.get_rid() == "rid-123"


async def test_secret_required():
    transport = httpx.ASGITransport(app=_app(Demo()))
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as c:
        r = await c.post("/_internal/demo/maybe", json={"args": {"key": "a"}})
        assert r.status_code == 403
        r = await c.post("/_internal/demo/maybe", json={"args": {"key": 5}},
                         headers={"X-Axon-Internal-Secret": "s3cret"})
        assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
        r = await c.post("/_internal/demo/maybe", content=b"{nope", headers={"X-Axon-Internal-Secret": "s3cret"})
        assert r.status_code == 400
    bad = RpcClient("demo", DemoAPI, ["http://a"], secret="wrong", transport=transport)
    with pytest.raises(ServiceUnavailable):
        await cast(Any, bad).maybe("a")
    await bad.aclose()


def test_codec_rejects_wrong_shapes():
    from libs.rpc import CodecError

    with pytest.raises(CodecError):
        decode({"room_id": "!r", "user_id": 5, "membership": "join", "event_id": "$e"}, RoomMembership)
    with pytest.raises(CodecError):
        decode([["a"]], dict[tuple[str, str], int])
    with pytest.raises(CodecError):
        decode(1, bool)
    req = CreateRoomRequest(creator="@a:x", room_version="10", invite=["@b:x"])
    assert decode(encode(req, CreateRoomRequest), CreateRoomRequest) == req


def test_unknown_method_is_attribute_error():
    client = RpcClient("roomserver", RoomserverAPI, ["http://a"])
    with pytest.raises(AttributeError):
        client.no_such_method  # noqa: B018



async def test_connection_refused_fails_over_to_a_live_replica():
    import uvicorn

    impl = Demo()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_app(impl), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    dead = f"http://127.0.0.1:{_free_port()}"
    client = RpcClient("demo", DemoAPI, [dead, f"http://127.0.0.1:{port}"], secret="s3cret")
    try:
        # Non-idempotent methods fail over too when nothing was sent.
        for _ in range(4):
            assert await cast(Any, client).add(("a",)) == 1
        assert impl.calls == 4
    finally:
        await client.aclose()
        server.should_exit = True
        await task
    lone = RpcClient("demo", DemoAPI, [dead], secret="s3cret", attempts=2)
    with pytest.raises(ServiceUnavailable):
        await cast(Any, lone).maybe("a")
    await lone.aclose()
