"""Server discovery (server-server spec, "Resolving server names").

`ServerDiscovery.resolve(server_name)` gives where to connect (`host`, `port`), the
`Host` header and the name the TLS certificate must be valid for:

1. IP literal: that IP, the given port or 8448.
2. Hostname with an explicit port: that host and port.
3. `https://<hostname>/.well-known/matrix/server` names a delegated server:
   3.1 IP literal / 3.2 with a port: use it as in 1/2;
   3.3 SRV `_matrix-fed._tcp.<delegated>`, 3.4 SRV `_matrix._tcp.<delegated>` (deprecated),
   3.5 else `<delegated>:8448`; Host header and certificate are the delegated name.
4./5. No valid well-known: SRV `_matrix-fed._tcp.<hostname>`, then `_matrix._tcp.<hostname>`.
6. Else `<hostname>:8448`.

Well-known answers are cached per their Cache-Control/Expires (default 24 h, at most
48 h); failures for an hour. DNS SRV goes through a `SrvResolver` (dnspython when
installed; tests give their own).
"""
from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, Protocol

log = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_TTL_S = 24 * 3600.0
WELL_KNOWN_MAX_TTL_S = 48 * 3600.0
WELL_KNOWN_MIN_TTL_S = 300.0
WELL_KNOWN_ERROR_TTL_S = 3600.0

_DNS_NAME = re.compile(r"^[A-Za-z0-9\-.]{1,255}$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def parse_server_name(name: str) -> tuple[str, int | None]:
    """Split a server name into (host, port); IPv6 hosts come back without brackets.
    Raise ValueError if it does not follow the spec's grammar."""
    if not isinstance(name, str) or not name or len(name) > 255 + 6:
        raise ValueError("bad server name")
    port_s: str | None = None
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 literal")
        host = name[1:end]
        rest = name[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("junk after IPv6 literal")
            port_s = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("bad IPv6 literal") from None
    else:
        host, sep, port_part = name.rpartition(":")
        if not sep:
            host, port_part = name, ""
        else:
            port_s = port_part
        if not _DNS_NAME.match(host) or host.startswith(".") or ".." in host:
            raise ValueError("bad hostname")
    port: int | None = None
    if port_s is not None:
        if not _PORT.match(port_s) or not 1 <= int(port_s) <= 65535:
            raise ValueError("bad port")
        port = int(port_s)
    return host, port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def format_host(host: str, port: int | None = None) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"{h}:{port}" if port is not None else h


def is_blocked_address(ip: str) -> bool:
    """Private, loopback, link-local, multicast, reserved and unspecified addresses
    (IPv4-mapped IPv6 judged as the IPv4 inside)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return bool(addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global)


@dataclass(frozen=True, slots=True)
class ServerTarget:
    host: str          # hostname or IP literal (no brackets) to connect to
    port: int
    host_header: str   # the Host header to send
    tls_name: str      # the name the certificate must match (SNI)


class SrvResolver(Protocol):
    async def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        """(target, port) pairs in preference order; [] if there is no record."""
        ...


class NoSrv:
    async def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        return []


class DnsPythonSrv:
    """SRV lookups with dnspython (optional dependency); any DNS failure means "no record"."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    async def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        try:
            import dns.asyncresolver
            import dns.exception
        except ImportError:  # pragma: no cover - dnspython not installed
            return []
        try:
            answer = await dns.asyncresolver.resolve(name, "SRV", lifetime=self.timeout_s)
        except (dns.exception.DNSException, OSError):
            return []
        recs = sorted(answer, key=lambda r: (r.priority, -r.weight))
        out = []
        for r in recs:
            target = str(r.target).rstrip(".")
            if target and target != ".":
                out.append((target, int(r.port)))
        return out


def default_srv_resolver() -> SrvResolver:
    try:
        import dns.asyncresolver  # noqa: F401
    except ImportError:  # pragma: no cover
        return NoSrv()
    return DnsPythonSrv()


def well_known_cache_ttl(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds to cache a successful well-known answer, per Cache-Control / Expires."""
    cc = headers.get("cache-control", "")
    ttl: float | None = None
    for part in cc.split(","):
        p = part.strip().lower()
        if p in ("no-store", "no-cache"):
            ttl = 0.0
        elif p.startswith("max-age="):
            try:
                ttl = float(int(p[8:].strip('"')))
            except ValueError:
                pass
    if ttl is None and headers.get("expires"):
        try:
            dt = email.utils.parsedate_to_datetime(headers["expires"])
            ttl = dt.timestamp() - (now if now is not None else time.time())
        except (TypeError, ValueError, IndexError):
            ttl = None
    if ttl is None:
        ttl = WELL_KNOWN_DEFAULT_TTL_S
    return min(max(ttl, WELL_KNOWN_MIN_TTL_S), WELL_KNOWN_MAX_TTL_S)


# Fetches https://<hostname>/.well-known/matrix/server: returns (status, headers, body bytes);
# raises OSError-like errors on network failure.
WellKnownFetcher = Callable[[str], Awaitable[tuple[int, Mapping[str, str], bytes]]]


def parse_well_known(status: int, body: bytes) -> str | None:
    """The delegated server name, or None if the answer is not a valid delegation."""
    import json

    if status != 200:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    server = obj.get("m.server")
    if not isinstance(server, str):
        return None
    try:
        parse_server_name(server)
    except ValueError:
        return None
    return server


class ServerDiscovery:
    def __init__(self, fetch_well_known: WellKnownFetcher, srv: SrvResolver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch_well_known = fetch_well_known
        self.srv = srv or NoSrv()
        self.clock = clock
        self._wk_cache: dict[str, tuple[float, str | None]] = {}
        self._wk_inflight: dict[str, asyncio.Future[str | None]] = {}

    async def delegated_name(self, hostname: str) -> str | None:
        cached = self._wk_cache.get(hostname)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        fut = self._wk_inflight.get(hostname)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._wk_inflight[hostname] = fut
        try:
            result, ttl = await self._fetch(hostname)
            self._wk_cache[hostname] = (self.clock() + ttl, result)
            fut.set_result(result)
            return result
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._wk_inflight.pop(hostname, None)

    async def _fetch(self, hostname: str) -> tuple[str | None, float]:
        try:
            status, headers, body = await self.fetch_well_known(hostname)
        except Exception as e:  # network errors, TLS errors, blocked addresses, oversize
            log.info("well-known lookup for %s failed: %s", hostname, e)
            return None, WELL_KNOWN_ERROR_TTL_S
        delegated = parse_well_known(status, body)
        if delegated is None:
            return None, WELL_KNOWN_ERROR_TTL_S
        lower = {k.lower(): v for k, v in headers.items()}
        return delegated, well_known_cache_ttl(lower)

    async def _srv_or_default(self, hostname: str) -> ServerTarget:
        for prefix in ("_matrix-fed._tcp.", "_matrix._tcp."):
            recs = await self.srv.lookup_srv(prefix + hostname)
            if recs:
                target, port = recs[0]
                return ServerTarget(target, port, hostname, hostname)
        return ServerTarget(hostname, DEFAULT_PORT, hostname, hostname)

    async def resolve(self, server_name: str) -> ServerTarget:
        host, port = parse_server_name(server_name)
        if is_ip_literal(host):
            p = port or DEFAULT_PORT
            return ServerTarget(host, p, format_host(host, port), host)
        if port is not None:
            return ServerTarget(host, port, format_host(host, port), host)
        delegated = await self.delegated_name(host)
        if delegated is not None:
            dhost, dport = parse_server_name(delegated)
            if is_ip_literal(dhost):
                return ServerTarget(dhost, dport or DEFAULT_PORT, format_host(dhost, dport), dhost)
            if dport is not None:
                return ServerTarget(dhost, dport, format_host(dhost, dport), dhost)
            return await self._srv_or_default(dhost)
        return await self._srv_or_default(host)
