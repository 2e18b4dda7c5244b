"""Outbound federation HTTP: discovery, X-Matrix signing, TLS, address block-list,
timeouts, response-size caps and retries with backoff.

`FederationClient.request(method, destination, path, query=, content=)` resolves the
destination (`discovery.ServerDiscovery`), resolves the host to addresses, refuses
private/loopback ones unless allowed, connects to the address itself with the TLS
name (SNI and certificate check) and `Host` header the spec asks for, signs the
request and returns the parsed JSON body.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Mapping, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from libs.config.model import FederationConfig
from libs.events.signing import SigningKey

from .discovery import (ServerDiscovery, ServerTarget, SrvResolver, default_srv_resolver, format_host,
                        is_blocked_address, is_ip_literal)
from .xmatrix import sign_request

log = logging.getLogger(__name__)

USER_AGENT = "Axon-federation"
MAX_WELL_KNOWN_BYTES = 64 * 1024
MAX_WELL_KNOWN_REDIRECTS = 5


class FederationError(Exception):
    """An outbound request failed."""


class FederationUnreachable(FederationError):
    """No connection (DNS, TLS, refused, timeout, blocked address, oversize reply)."""


class FederationHTTPError(FederationError):
    """The remote answered with an error status."""

    def __init__(self, destination: str, status: int, body: Any) -> None:
        self.destination = destination
        self.status = status
        self.body = body
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"{destination} answered {status} {self.errcode or ''}".strip())


class AddressResolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemAddressResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        out: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = str(sockaddr[0])
            if ip not in out:
                out.append(ip)
        return out


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def make_ssl_context(cfg: FederationConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if cfg.tls_ca_file:
        ctx.load_verify_locations(cafile=cfg.tls_ca_file)
    if not cfg.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _backoff_s(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    return min(cap, base * (2 ** attempt)) * (0.5 + random.random() / 2)


class FederationClient:
    def __init__(self, server_name: str, signing_key: SigningKey, cfg: FederationConfig, *,
                 srv: SrvResolver | None = None, addresses: AddressResolver | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 discovery: ServerDiscovery | None = None) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.cfg = cfg
        self.addresses = addresses or SystemAddressResolver()
        self.discovery = discovery or ServerDiscovery(self.fetch_well_known, srv or default_srv_resolver())
        timeout = httpx.Timeout(cfg.request_timeout_s, connect=cfg.connect_timeout_s)
        if transport is not None:
            self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        else:
            self._http = httpx.AsyncClient(verify=make_ssl_context(cfg), timeout=timeout, follow_redirects=False,
                                           trust_env=False,
                                           limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- low level ---------------------------------------------------------------

    async def _addresses(self, host: str, port: int) -> list[str]:
        if is_ip_literal(host):
            ips = [host]
        else:
            try:
                ips = await self.addresses.resolve(host, port)
            except OSError as e:
                raise FederationUnreachable(f"cannot resolve {host}: {e}") from None
        if self.cfg.block_private_addresses:
            allowed = [ip for ip in ips if not is_blocked_address(ip)]
            if not allowed:
                raise FederationUnreachable(f"{host} resolves only to blocked addresses")
            ips = allowed
        if not ips:
            raise FederationUnreachable(f"{host} has no address")
        return ips

    async def _send_to(self, target: ServerTarget, method: str, uri: str, headers: dict[str, str],
                       body: bytes | None, max_bytes: int, timeout_s: float | None) -> Response:
        ips = await self._addresses(target.host, target.port)
        last: Exception | None = None
        for ip in ips:
            url = f"https://{format_host(ip)}:{target.port}{uri}"
            h = {"Host": target.host_header, "User-Agent": USER_AGENT, **headers}
            ext: dict[str, Any] = {"sni_hostname": target.tls_name}
            if timeout_s is not None:
                ext["timeout"] = {"connect": min(timeout_s, self.cfg.connect_timeout_s), "read": timeout_s,
                                  "write": timeout_s, "pool": timeout_s}
            try:
                req = self._http.build_request(method, url, headers=h, content=body, extensions=ext)
                resp = await self._http.send(req, stream=True)
                try:
                    declared = resp.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                        raise FederationUnreachable(f"response larger than {max_bytes} bytes")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_raw():
                        size += len(chunk)
                        if size > max_bytes:
                            raise FederationUnreachable(f"response larger than {max_bytes} bytes")
                        chunks.append(chunk)
                finally:
                    await resp.aclose()
                return Response(resp.status_code, dict(resp.headers), b"".join(chunks))
            except FederationUnreachable:
                raise
            except (httpx.HTTPError, OSError, ssl.SSLError) as e:
                last = e
                continue
        raise FederationUnreachable(f"{target.host}:{target.port}: {type(last).__name__}: {last}")

    # ---- discovery -----------------------------------------------------------------

    async def fetch_well_known(self, hostname: str) -> tuple[int, Mapping[str, str], bytes]:
        """GET https://<hostname>/.well-known/matrix/server, following https redirects."""
        url = f"https://{hostname}/.well-known/matrix/server"
        for _ in range(MAX_WELL_KNOWN_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise FederationUnreachable("well-known redirect to a non-https URL")
            host = parts.hostname
            port = parts.port or 443
            uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host_header = format_host(host, parts.port)
            target = ServerTarget(host, port, host_header, host)
            resp = await self._send_to(target, "GET", uri, {"Accept": "application/json"}, None,
                                       MAX_WELL_KNOWN_BYTES, self.cfg.connect_timeout_s)
            if resp.status in (301, 302, 303, 307, 308) and "location" in {k.lower() for k in resp.headers}:
                loc = next(v for k, v in resp.headers.items() if k.lower() == "location")
                url = urljoin(url, loc)
                continue
            return resp.status, resp.headers, resp.body
        raise FederationUnreachable("too many well-known redirects")

    # ---- federation requests ------------------------------------------------------

    def build_uri(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        if not query:
            return path
        return path + "?" + urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)

    async def request(self, method: str, destination: str, path: str, *, query: Mapping[str, Any] | None = None,
                      content: Any | None = None, signed: bool = True, retries: int | None = None,
                      timeout_s: float | None = None, max_bytes: int | None = None) -> Any:
        """Send one request to `destination` and return its parsed JSON body.

        Retries (with jittered exponential backoff) on connection errors and 5xx; raises
        FederationHTTPError for other error statuses, FederationUnreachable otherwise."""
        resp = await self.request_raw(method, destination, path, query=query, content=content, signed=signed,
                                      retries=retries, timeout_s=timeout_s, max_bytes=max_bytes)
        try:
            return json.loads(resp.body) if resp.body else None
        except (ValueError, UnicodeDecodeError):
            raise FederationHTTPError(destination, resp.status, {"error": "response is not JSON"}) from None

    async def request_raw(self, method: str, destination: str, path: str, *,
                          query: Mapping[str, Any] | None = None, content: Any | None = None, signed: bool = True,
                          retries: int | None = None, timeout_s: float | None = None,
                          max_bytes: int | None = None, accept: str = "application/json") -> Response:
        """`request`, answering the raw 2xx response (status, headers, body) — for bodies
        that are not JSON (federation media is multipart/mixed)."""
        if destination == self.server_name:
            raise FederationError("refusing to send a federation request to ourselves")
        uri = self.build_uri(path, query)
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode() if content is not None else None
        headers: dict[str, str] = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            headers["Authorization"] = sign_request(self.signing_key, self.server_name, destination, method, uri, content)
        attempts = (self.cfg.max_retries if retries is None else retries) + 1
        limit = max_bytes or self.cfg.max_response_bytes
        last: FederationError | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(_backoff_s(attempt - 1))
            try:
                target = await self.discovery.resolve(destination)
            except ValueError as e:
                raise FederationUnreachable(f"bad server name {destination!r}: {e}") from None
            try:
                resp = await self._send_to(target, method, uri, headers, body, limit, timeout_s)
            except FederationUnreachable as e:
                last = e
                continue
            if 200 <= resp.status < 300:
                return resp
            parsed: Any = None
            try:
                parsed = json.loads(resp.body) if resp.body else None
            except (ValueError, UnicodeDecodeError):
                parsed = None
            err = FederationHTTPError(destination, resp.status, parsed)
            if resp.status >= 500 or resp.status == 429:
                last = err
                continue
            raise err
        assert last is not None
        raise last

    async def get_json(self, destination: str, path: str, query: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        return await self.request("GET", destination, path, query=query, **kw)

    async def put_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        return await self.request("PUT", destination, path, content=content, **kw)

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        return await self.request("POST", destination, path, content=content, **kw)
