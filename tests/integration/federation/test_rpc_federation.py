"""The clientapi reaches the federationapi's perform_* over the internal RPC in the
cluster: the generated client and router carry arguments, tuples and errors."""
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
from services.federationapi.service import FederationInternal


class FakePerformer:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

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


async def test_perform_methods_over_rpc():
    impl = FederationInternal("us.test", [generate_signing_key("k")], 3600_000)
    fake = FakePerformer()
    impl.performer = fake  # type: ignore[assignment]
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(rpc_router("federationapi", FederationAPI, impl, secret="s"))
    client = RpcClient("federationapi", FederationAPI, ["http://fed"], secret="s",
                       transport=httpx.ASGITransport(app=app))
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
