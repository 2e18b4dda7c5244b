import json

import pytest

from services.federationapi.discovery import (ServerDiscovery, ServerTarget, is_blocked_address, parse_server_name,
                                              well_known_cache_ttl)


class FakeSrv:
    def __init__(self, records=None):
        self.records = records or {}
        self.asked = []

    async def lookup_srv(self, name):
        self.asked.append(name)
        return self.records.get(name, [])


class FakeWellKnown:
    def __init__(self, answers):
        self.answers = answers  # hostname -> (status, headers, body) or Exception
        self.calls = 0

    async def __call__(self, hostname):
        self.calls += 1
        a = self.answers.get(hostname, OSError("connection refused"))
        if isinstance(a, Exception):
            raise a
        return a


def wk(server, headers=None, status=200):
    return status, headers or {}, json.dumps({"m.server": server}).encode()


class Clock:
    t = 1000.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("name,expected", [
    ("example.org", ("example.org", None)), ("example.org:8448", ("example.org", 8448)),
    ("1.2.3.4", ("1.2.3.4", None)), ("1.2.3.4:80", ("1.2.3.4", 80)), ("[::1]", ("::1", None)),
    ("[2001:db8::1]:8000", ("2001:db8::1", 8000)), ("localhost", ("localhost", None)),
])
def test_parse_server_name(name, expected):
    assert parse_server_name(name) == expected


@pytest.mark.parametrize("name", ["", ":80", "a..b", "ex ample.org", "example.org:0", "example.org:65536",
                                  "example.org:", "[::1", "[nothex]:80", "[::1]x", "a" * 300, "exa_mple.org",
                                  "example.org:80:80"])
def test_parse_server_name_rejects(name):
    with pytest.raises(ValueError):
        parse_server_name(name)


async def resolve(name, answers=None, srv=None):
    d = ServerDiscovery(FakeWellKnown(answers or {}), FakeSrv(srv))
    return await d.resolve(name)


async def test_ip_literal_and_explicit_port_skip_well_known():
    f = FakeWellKnown({})
    d = ServerDiscovery(f, FakeSrv())
    assert await d.resolve("1.2.3.4") == ServerTarget("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")
    assert await d.resolve("[::1]:9000") == ServerTarget("::1", 9000, "[::1]:9000", "::1")
    assert await d.resolve("example.org:1234") == ServerTarget("example.org", 1234, "example.org:1234", "example.org")
    assert f.calls == 0


async def test_well_known_delegation_rules():
    # 3.1 delegated IP literal
    assert await resolve("a.org", {"a.org": wk("5.6.7.8")}) == ServerTarget("5.6.7.8", 8448, "5.6.7.8", "5.6.7.8")
    # 3.2 delegated host with port: Host header and certificate name are the delegated name
    assert await resolve("a.org", {"a.org": wk("m.a.org:443")}) == \
        ServerTarget("m.a.org", 443, "m.a.org:443", "m.a.org")
    # 3.3 SRV _matrix-fed on the delegated name
    t = await resolve("a.org", {"a.org": wk("m.a.org")}, {"_matrix-fed._tcp.m.a.org": [("srv.a.org", 8999)]})
    assert t == ServerTarget("srv.a.org", 8999, "m.a.org", "m.a.org")
    # 3.4 deprecated _matrix SRV
    t = await resolve("a.org", {"a.org": wk("m.a.org")}, {"_matrix._tcp.m.a.org": [("old.a.org", 7000)]})
    assert t == ServerTarget("old.a.org", 7000, "m.a.org", "m.a.org")
    # 3.5 default port on the delegated name
    assert await resolve("a.org", {"a.org": wk("m.a.org")}) == ServerTarget("m.a.org", 8448, "m.a.org", "m.a.org")


@pytest.mark.parametrize("answer", [
    (404, {}, b"{}"), (200, {}, b"not json"), (200, {}, b"[]"), (200, {}, b'{"m.server": 5}'),
    (200, {}, b'{"m.server": "bad host!"}'), (200, {}, b'{"other": "x"}'), OSError("refused"),
])
async def test_invalid_well_known_falls_back_to_srv_then_8448(answer):
    t = await resolve("b.org", {"b.org": answer}, {"_matrix-fed._tcp.b.org": [("fed.b.org", 8443)]})
    assert t == ServerTarget("fed.b.org", 8443, "b.org", "b.org")
    assert await resolve("b.org", {"b.org": answer}) == ServerTarget("b.org", 8448, "b.org", "b.org")


async def test_well_known_is_cached_per_headers_and_errors_for_an_hour():
    clock = Clock()
    f = FakeWellKnown({"c.org": wk("m.c.org", {"Cache-Control": "max-age=600"})})
    d = ServerDiscovery(f, FakeSrv(), clock=clock)
    await d.resolve("c.org")
    clock.t += 599
    await d.resolve("c.org")
    assert f.calls == 1
    clock.t += 2
    await d.resolve("c.org")
    assert f.calls == 2
    # errors: cached for an hour
    f.answers["e.org"] = OSError("down")
    await d.resolve("e.org")
    clock.t += 3599
    await d.resolve("e.org")
    assert f.calls == 3
    clock.t += 2
    await d.resolve("e.org")
    assert f.calls == 4


def test_cache_ttl_bounds():
    assert well_known_cache_ttl({}) == 24 * 3600
    assert well_known_cache_ttl({"cache-control": "max-age=999999999"}) == 48 * 3600
    assert well_known_cache_ttl({"cache-control": "max-age=10"}) == 300  # lower bound
    assert well_known_cache_ttl({"cache-control": "public, max-age=7200"}) == 7200
    assert well_known_cache_ttl({"expires": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 300
    assert well_known_cache_ttl({"cache-control": "max-age=junk"}) == 24 * 3600


@pytest.mark.parametrize("ip,blocked", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("192.168.0.1", True), ("172.16.5.5", True), ("169.254.1.1", True),
    ("::1", True), ("fe80::1", True), ("fc00::1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", True),
    ("100.64.0.1", True), ("224.0.0.1", True), ("8.8.8.8", False), ("2001:4860:4860::8888", False),
    ("not-an-ip", True),
])
def test_blocked_addresses(ip, blocked):
    assert is_blocked_address(ip) is blocked
