"""A client implementing an internal-API Protocol over HTTP (httpx).

    roomserver = cast(RoomserverAPI, RpcClient("roomserver", RoomserverAPI, urls, secret=...))
    await roomserver.get_joined_members(room_id)

One pooled `httpx.AsyncClient` per RpcClient; calls go round-robin over the
replicas' base URLs. A connection that could not be opened (nothing was sent)
fails over to the next replica for every method; other transport failures are
retried only for idempotent query methods. A MatrixError raised by the
implementation is re-raised here with the same status/errcode/extra; transport
failures end as 503 M_UNKNOWN (`ServiceUnavailable`). The caller's X-Request-ID
travels along.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Collection, Sequence
from typing import Any

import httpx

from libs.errors import MatrixError
from libs.metrics.logs import REQUEST_ID_HEADER, current_request_id

from .codec import CodecError, decode, encode
from .protocol import MethodSpec, is_idempotent, protocol_methods
from .server import PATH_PREFIX, SECRET_HEADER

log = logging.getLogger(__name__)


class ServiceUnavailable(MatrixError):
    """No replica of an internal service answered usefully."""

    def __init__(self, service: str, method: str, reason: str) -> None:
        super().__init__(503, "M_UNKNOWN", f"{service} is unavailable; try again")
        self.reason = f"{service}.{method}: {reason}"


class RpcClient:
    def __init__(
        self,
        service: str,
        protocol: type,
        urls: Sequence[str],
        *,
        secret: str = "",
        timeout_s: float = 30.0,
        connect_timeout_s: float = 2.0,
        attempts: int = 3,
        idempotent: Collection[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise ValueError(f"no URL for the {service} internal API")
        self.service = service
        self.urls = [u.rstrip("/") for u in urls]
        self._methods = protocol_methods(protocol)
        self._secret = secret
        self._timeout_s = timeout_s
        self._attempts = max(1, attempts)
        self._idempotent = set(idempotent) if idempotent is not None else {
            n for n in self._methods if is_idempotent(n)}
        self._rr = itertools.count()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def __getattr__(self, name: str) -> Any:
        # Only Protocol methods exist on the client; anything else is a bug.
        methods = self.__dict__.get("_methods", {})
        spec = methods.get(name)
        if spec is None:
            raise AttributeError(f"{self.__dict__.get('service', '?')} internal API has no method {name!r}")

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.call(spec, spec.bind(args, kwargs))

        call.__name__ = name
        return call

    async def call(self, spec: MethodSpec, bound: dict[str, Any]) -> Any:
        body = json.dumps({"args": {n: encode(bound[n], tp) for n, tp, _ in spec.params}}).encode()
        headers = {"content-type": "application/json"}
        if self._secret:
            headers[SECRET_HEADER] = self._secret
        rid = current_request_id()
        if rid:
            headers[REQUEST_ID_HEADER] = rid
        # Long-polling methods take a timeout_s argument: wait at least that long.
        timeout = self._timeout_s
        if isinstance(bound.get("timeout_s"), (int, float)):
            timeout = max(timeout, float(bound["timeout_s"]) + 5.0)
        retry_any = spec.name in self._idempotent
        start = next(self._rr)
        last = "no attempt"
        for attempt in range(self._attempts):
            url = f"{self.urls[(start + attempt) % len(self.urls)]}{PATH_PREFIX}/{self.service}/{spec.name}"
            try:
                resp = await self._http.post(url, content=body, headers=headers, timeout=timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                last = f"{type(e).__name__}: {e}"  # never sent: safe to try elsewhere
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                if not retry_any:
                    break
            else:
                if resp.status_code == 200:
                    return self._result(spec, resp)
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code < 500 or not retry_any:
                    break
            if attempt + 1 < self._attempts:
                await asyncio.sleep(0.05 * (2 ** attempt))
        log.warning("internal call %s.%s failed: %s", self.service, spec.name, last)
        raise ServiceUnavailable(self.service, spec.name, last)

    def _result(self, spec: MethodSpec, resp: httpx.Response) -> Any:
        try:
            data = resp.json()
        except ValueError:
            raise ServiceUnavailable(self.service, spec.name, "answer is not JSON") from None
        if isinstance(data, dict) and "matrix_error" in data:
            e = data["matrix_error"]
            err = MatrixError(int(e.get("status", 500)), str(e.get("errcode", "M_UNKNOWN")),
                              str(e.get("error", "")), headers=e.get("headers") or None,
                              **(e.get("extra") or {}))
            if isinstance(e.get("body"), dict):
                err.body = e["body"]
            raise err
        if not isinstance(data, dict) or "result" not in data:
            raise ServiceUnavailable(self.service, spec.name, "answer has no result")
        try:
            return decode(data["result"], spec.returns)
        except CodecError as e:
            raise ServiceUnavailable(self.service, spec.name, f"undecodable answer: {e}") from None
