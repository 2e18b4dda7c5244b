"""Random and malformed bodies on every account route: always a Matrix error or
success, never a 5xx. Fixed seed; AXON_LONG_FUZZ=1 runs many more rounds."""
from __future__ import annotations

import os
import random
from typing import Any

import pytest

from tests.integration.clientapi_account.conftest import V3, Harness, auth

pytestmark = pytest.mark.asyncio(loop_scope="module")

FIELDS = [
    "type", "identifier", "user", "password", "device_id", "initial_device_display_name", "username",
    "auth", "session", "inhibit_login", "new_password", "logout_devices", "devices", "display_name",
    "displayname", "avatar_url", "actions", "conditions", "pattern", "enabled", "room", "timeline",
    "limit", "types", "rooms", "event_format", "event_fields", "token", "kind", "set_tweak",
]
STRINGS = ["", "m.login.password", "m.login.dummy", "m.id.user", "fuzz", "@fuzz:test.local", "\u0000", "é" * 3,
           "x" * 300, "notify", "global", "!r:test.local", "m.login.registration_token"]


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.randrange(9 if depth < 3 else 6)
    if roll == 0:
        return None
    if roll == 1:
        return rng.choice([True, False])
    if roll == 2:
        return rng.choice([0, -1, 1, 2**53, -(2**63), 3])
    if roll == 3:
        return rng.choice([1.5, -0.0])
    if roll in (4, 5):
        return rng.choice(STRINGS)
    if roll in (6, 7):
        return {rng.choice(FIELDS): value(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [value(rng, depth + 1) for _ in range(rng.randrange(4))]


def routes(uid: str, dev: str) -> list[tuple[str, str]]:
    return [
        ("POST", f"{V3}/login"),
        ("POST", f"{V3}/register"),
        ("POST", f"{V3}/register?kind=guest"),
        ("POST", f"{V3}/account/password"),
        ("POST", f"{V3}/delete_devices"),
        ("PUT", f"{V3}/devices/{dev}"),
        ("DELETE", f"{V3}/devices/NOPE"),
        ("PUT", f"{V3}/profile/{uid}/displayname"),
        ("PUT", f"{V3}/profile/{uid}/avatar_url"),
        ("PUT", f"{V3}/user/{uid}/account_data/m.fuzz"),
        ("PUT", f"{V3}/user/{uid}/rooms/!r:test.local/account_data/m.fuzz"),
        ("POST", f"{V3}/user/{uid}/filter"),
        ("PUT", f"{V3}/pushrules/global/override/fuzz"),
        ("PUT", f"{V3}/pushrules/global/content/fuzz"),
        ("PUT", f"{V3}/pushrules/global/room/!r:test.local"),
        ("PUT", f"{V3}/pushrules/global/override/.m.rule.master/enabled"),
        ("PUT", f"{V3}/pushrules/global/underride/.m.rule.message/actions"),
    ]


async def test_random_bodies_never_5xx(hs: Harness) -> None:
    reg = await hs.register("fuzzer")
    h = auth(reg["access_token"])
    rng = random.Random(1234)
    rounds = 2000 if os.environ.get("AXON_LONG_FUZZ") == "1" else 12
    raw_bodies = [b"", b"{", b"null", b"[]", b'"s"', b"1e999", b'{"a":NaN}', b"\xff\xfe", b'{"a":1,"a":2}']
    for method, path in routes(reg["user_id"], reg["device_id"]):
        for raw in raw_bodies:
            r = await hs.client.request(method, path, headers={**h, "Content-Type": "application/json"}, content=raw)
            assert r.status_code < 500, (method, path, raw, r.text)
            assert r.status_code < 300 or "errcode" in r.json() or "flows" in r.json(), (path, r.text)
        for _ in range(rounds):
            body = value(rng)
            r = await hs.client.request(method, path, headers=h, json=body)
            assert r.status_code < 500, (method, path, body, r.text)
            if r.status_code >= 300:
                assert "errcode" in r.json() or "flows" in r.json(), (path, body, r.text)
    # The fuzzing user can still use the account afterwards (or changed its password).
    who = await hs.client.get(f"{V3}/account/whoami", headers=h)
    assert who.status_code in (200, 401)
