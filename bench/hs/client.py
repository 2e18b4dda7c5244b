"""A minimal Client-Server API client for load generation (aiohttp, HTTP/1.1 keep-alive).

aiohttp + orjson rather than httpx: about half the client CPU per request, which
matters when client and server share two cores.
"""
from __future__ import annotations

import itertools
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

CS = "/_matrix/client/v3"
_JSON = {"Content-Type": "application/json"}


class BenchHttpError(Exception):
    """A non-2xx answer (or an unparseable body) from the server under test."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {str(body)[:300]}")
        self.status = status
        self.body = body


def new_session(*, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    """One pooled keep-alive session for every simulated user (no per-host cap)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=120, ttl_dns_cache=None),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        json_serialize=lambda o: orjson.dumps(o).decode(),
    )


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


async def _call(http: aiohttp.ClientSession, base: str, method: str, path: str, *,
                token: str | None = None, body: Any = None, params: dict[str, str] | None = None,
                timeout_s: float | None = None) -> dict[str, Any]:
    headers = dict(_JSON)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = orjson.dumps(body) if body is not None else None
    kwargs: dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
    async with http.request(method, base + path, data=data, params=params, headers=headers, **kwargs) as resp:
        raw = await resp.read()
        try:
            doc = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise BenchHttpError(method, path, resp.status, raw[:300]) from None
        if resp.status >= 300:
            raise BenchHttpError(method, path, resp.status, doc)
        return doc if isinstance(doc, dict) else {"_": doc}


@dataclass
class User:
    """A logged-in user: access token plus helpers for the calls the scenarios make."""

    http: aiohttp.ClientSession
    base: str
    user_id: str
    token: str

    def __post_init__(self) -> None:
        self._txn = itertools.count()

    async def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                   timeout_s: float | None = None) -> dict[str, Any]:
        return await _call(self.http, self.base, method, path, token=self.token, body=body,
                           params=params, timeout_s=timeout_s)

    async def create_room(self, **body: Any) -> str:
        doc = await self.call("POST", f"{CS}/createRoom", body)
        return str(doc["room_id"])

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"{CS}/join/{_q(room_id)}", {})

    async def send_text(self, room_id: str, text: str) -> str:
        txn = f"b{next(self._txn)}"
        doc = await self.call("PUT", f"{CS}/rooms/{_q(room_id)}/send/m.room.message/{txn}",
                              {"msgtype": "m.text", "body": text})
        return str(doc["event_id"])

    async def create_filter(self, flt: dict[str, Any]) -> str:
        doc = await self.call("POST", f"{CS}/user/{_q(self.user_id)}/filter", flt)
        return str(doc["filter_id"])

    async def sync(self, *, since: str | None = None, timeout_ms: int = 0, flt: str | None = None,
                   http_timeout_s: float = 120.0) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        if flt is not None:
            params["filter"] = flt
        return await self.call("GET", f"{CS}/sync", params=params, timeout_s=http_timeout_s)


async def wait_ready(http: aiohttp.ClientSession, base: str) -> bool:
    """True once GET /_matrix/client/versions answers 200."""
    try:
        async with http.get(base + "/_matrix/client/versions",
                            timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def register(http: aiohttp.ClientSession, base: str, username: str, password: str) -> User:
    """Register with the m.login.dummy flow (retrying with the server's UIA session if asked)."""
    body: dict[str, Any] = {"username": username, "password": password,
                            "initial_device_display_name": "bench", "auth": {"type": "m.login.dummy"}}
    for _ in range(3):
        try:
            doc = await _call(http, base, "POST", f"{CS}/register", body=body)
            return User(http, base, str(doc["user_id"]), str(doc["access_token"]))
        except BenchHttpError as e:
            session = e.body.get("session") if isinstance(e.body, dict) else None
            if e.status != 401 or not session:
                raise
            body["auth"] = {"type": "m.login.dummy", "session": session}
    raise BenchHttpError("POST", f"{CS}/register", 401, "registration did not complete")
