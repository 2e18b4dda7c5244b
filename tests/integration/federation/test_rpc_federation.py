"""The clientapi reaches the federationapi's perform_* and query_* (remote profiles, E2E
keys, public room lists) over the internal RPC in the cluster: the generated client and
router carry arguments, tuples and errors."""
from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from libs.errors import MatrixError, forbidden
from libs.events.signing import generate_signing_key
from libs.http import install_error_handlers
from libs.rpc import RpcClient, rpc_router
from services.federationapi.api import FederationAPI
from services.federationapi.client import FederationHTTPError, FederationUnreachable
from services.federationapi.service import FederationInternal


class FakeFedClient:
    """Answers the federation requests that the query_* methods make, per destination."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, Any]] = []

    async def get_json(self, destination: str, path: str, query: Any = None, **kw: Any) -> Any:
        self.requests.append(("GET", destination, path, query))
        return self._answer(destination, path, query)

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        self.requests.append(("POST", destination, path, content))
        return self._answer(destination, path, content)

    def _answer(self, destination: str, path: str, arg: Any) -> Any:
        if destination == "down":
            raise FederationUnreachable("down: connection refused")
        if path.endswith("/query/profile"):
            if arg["user_id"] == "@nobody:remote":
                raise FederationHTTPError(destination, 404, {"errcode": "M_NOT_FOUND"})
            return {"displayname": "Rem", "avatar_url": "mxc://remote/a", "extra": 1}
        if path.endswith("/user/keys/query"):
            return {"device_keys": {u: {"D1": {"user_id": u, "device_id": "D1"}} for u in arg["device_keys"]}}
        if path.endswith("/user/keys/claim"):
            return {"one_time_keys": {u: {"D1": {"signed_curve25519:A": {"key": "k"}}} for u in arg["one_time_keys"]}}
        if path.endswith("/publicRooms"):
            return {"chunk": [{"room_id": "!p:remote", "num_joined_members": 2}], "total_room_count_estimate": 1}
        raise AssertionError(path)


class FakePerformer:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.client = FakeFedClient()

    async def perform_join(self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]) -> str:
        self.calls.append(("join", room_id, user_id, servers, content))
        return "$join"

    async def perform_leave(self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]) -> str:
        raise forbidden("not allowed", room_version="11")

    async def perform_invite(self, room_id: str, sender: str, invitee: str, content: dict[str, Any]) -> str:
        return "$invite"

    async def perform_knock(self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]) -> str:
        return "$knock"

    async def query_room_alias(self, alias: str) -> tuple[str, list[str]]:
        return "!r:remote", ["remote", "other"]


def _rpc(impl: FederationInternal) -> RpcClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(rpc_router("federationapi", FederationAPI, impl, secret="s"))
    return RpcClient("federationapi", FederationAPI, ["http://fed"], secret="s",
                     transport=httpx.ASGITransport(app=app))


async def test_perform_methods_over_rpc():
    impl = FederationInternal("us.test", [generate_signing_key("k")], 3600_000)
    fake = FakePerformer()
    impl.performer = fake  # type: ignore[assignment]
    client = _rpc(impl)
    try:
        api: Any = client
        assert await api.perform_join("!r:remote", "@a:us.test", ["remote"], {"membership": "join"}) == "$join"
        assert fake.calls == [("join", "!r:remote", "@a:us.test", ["remote"], {"membership": "join"})]
        assert await api.perform_invite("!r:remote", "@a:us.test", "@b:remote", {}) == "$invite"
        assert await api.perform_knock("!r:remote", "@a:us.test", [], {}) == "$knock"
        room_id, servers = await api.query_room_alias("#a:remote")
        assert (room_id, list(servers)) == ("!r:remote", ["remote", "other"])
        with pytest.raises(MatrixError) as ei:
            await api.perform_leave("!r:remote", "@a:us.test", [], {})
        assert (ei.value.status, ei.value.errcode) == (403, "M_FORBIDDEN")
        # Without federation (no performer) every perform is a 403.
        impl.performer = None
        with pytest.raises(MatrixError) as ei:
            await api.perform_join("!r:remote", "@a:us.test", [], {})
        assert ei.value.status == 403
    finally:
        await client.aclose()


async def test_query_methods_over_rpc():
    impl = FederationInternal("us.test", [generate_signing_key("k")], 3600_000)
    fake = FakePerformer()
    impl.performer = fake  # type: ignore[assignment]
    client = _rpc(impl)
    try:
        api: Any = client
        # The clientapi's checks (`hasattr(deps.federation, "query_public_rooms")`) see them.
        assert all(hasattr(client, m) for m in ("query_profile", "query_remote_keys", "query_public_rooms"))
        assert await api.query_profile("@u:remote") == {"displayname": "Rem", "avatar_url": "mxc://remote/a"}
        assert await api.query_profile("@nobody:remote") is None
        with pytest.raises(MatrixError) as ei:
            await api.query_profile("@u:down")
        assert ei.value.status == 502
        got = await api.query_remote_keys("remote", "query", {"device_keys": {"@u:remote": []}})
        assert got["device_keys"]["@u:remote"]["D1"]["device_id"] == "D1"
        got = await api.query_remote_keys("remote", "claim", {"one_time_keys": {"@u:remote": {"D1": "signed_curve25519"}}})
        assert "signed_curve25519:A" in got["one_time_keys"]["@u:remote"]["D1"]
        # An unreachable server is a typed 502 (not a 500 the RPC client would retry).
        n = len(fake.client.requests)
        with pytest.raises(MatrixError) as ei:
            await api.query_remote_keys("down", "query", {"device_keys": {"@u:down": []}})
        assert ei.value.status == 502 and len(fake.client.requests) == n + 1
        rooms = await api.query_public_rooms("remote", {"limit": 5}, None)
        assert rooms["chunk"][0]["room_id"] == "!p:remote"
        assert fake.client.requests[-1] == ("GET", "remote", "/_matrix/federation/v1/publicRooms", {"limit": 5})
        await api.query_public_rooms("remote", None, {"filter": {"generic_search_term": "x"}})
        assert fake.client.requests[-1][0] == "POST"
        # Federation off: each is a 403, as in the embedded composition.
        impl.performer = None
        for call in (api.query_profile("@u:remote"), api.query_remote_keys("remote", "query", {}),
                     api.query_public_rooms("remote", None, None)):
            with pytest.raises(MatrixError) as ei:
                await call
            assert ei.value.status == 403
    finally:
        await client.aclose()
