from __future__ import annotations

import pytest
from starlette.requests import Request

from libs.config import HomeserverConfig
from libs.errors import MatrixError
from services.userapi.api import Device
from services.userapi.client_auth import ClientAuth


class FakeUserAPI:
    """Only what ClientAuth calls; counts token lookups."""

    def __init__(self) -> None:
        self.tokens = {"good": Device("@a:x", "D1"), "guest": Device("@g:x", "G1", is_guest=True)}
        self.lookups = 0
        self.touched: list[tuple[str, str, str | None]] = []

    async def query_access_token(self, token: str) -> Device | None:
        self.lookups += 1
        return self.tokens.get(token)

    async def touch_device(self, user_id: str, device_id: str, ip: str | None) -> None:
        self.touched.append((user_id, device_id, ip))


def request(headers: dict[str, str] | None = None, query: str = "") -> Request:
    return Request({
        "type": "http", "method": "GET", "path": "/", "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("10.1.2.3", 5000),
    })


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_cache_ttl_and_invalidation() -> None:
    api = FakeUserAPI()
    clock = Clock()
    auth = ClientAuth(api, HomeserverConfig(), cache_ttl_s=10, clock=clock)  # type: ignore[arg-type]
    dep = auth.require()
    d = await dep(request({"Authorization": "Bearer good"}))
    assert d.user_id == "@a:x" and api.lookups == 1 and api.touched == [("@a:x", "D1", "10.1.2.3")]
    await dep(request({"Authorization": "Bearer good"}))
    assert api.lookups == 1
    clock.t = 11
    await dep(request({"Authorization": "Bearer good"}))
    assert api.lookups == 2
    # Revoked elsewhere in this process: the cache entry is dropped at once.
    del api.tokens["good"]
    auth.invalidate_user("@a:x")
    with pytest.raises(MatrixError) as e:
        await dep(request({"Authorization": "Bearer good"}))
    assert e.value.errcode == "M_UNKNOWN_TOKEN" and e.value.extra == {"soft_logout": False}


async def test_missing_guest_and_query_param() -> None:
    api = FakeUserAPI()
    cfg = HomeserverConfig()
    auth = ClientAuth(api, cfg)  # type: ignore[arg-type]
    with pytest.raises(MatrixError) as e:
        await auth.require()(request())
    assert e.value.status == 401 and e.value.errcode == "M_MISSING_TOKEN"
    with pytest.raises(MatrixError) as e:
        await auth.require()(request(query="access_token=good"))
    assert e.value.errcode == "M_MISSING_TOKEN"
    cfg.client.allow_query_access_token = True
    assert (await auth.require()(request(query="access_token=good"))).device_id == "D1"
    with pytest.raises(MatrixError) as e:
        await auth.require()(request({"Authorization": "Bearer guest"}))
    assert e.value.errcode == "M_GUEST_ACCESS_FORBIDDEN"
    assert (await auth.require(allow_guest=True)(request({"Authorization": "Bearer guest"}))).is_guest
