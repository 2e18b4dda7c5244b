"""/versions, well-known, /register (UIA, guest, tokens), /register/available, /login."""
from __future__ import annotations

import pytest

from tests.integration.clientapi_account.conftest import V3, Harness, auth

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_versions_and_well_known(hs: Harness) -> None:
    r = await hs.client.get("/_matrix/client/versions")
    assert r.status_code == 200
    assert "v1.11" in r.json()["versions"] and "v1.12" in r.json()["versions"]
    r = await hs.client.get("/.well-known/matrix/client")
    assert r.json() == {"m.homeserver": {"base_url": "https://hs.test.local/"}}


async def test_register_uia_round_trip(hs: Harness) -> None:
    r = await hs.client.post(f"{V3}/register", json={"username": "alice", "password": "pw"})
    assert r.status_code == 401
    body = r.json()
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert "params" in body and body["session"] and "errcode" not in body
    r = await hs.client.post(
        f"{V3}/register",
        json={"username": "alice", "password": "pw", "initial_device_display_name": "Web",
              "auth": {"type": "m.login.dummy", "session": body["session"]}},
    )
    assert r.status_code == 200, r.text
    reg = r.json()
    assert reg["user_id"] == "@alice:test.local" and reg["access_token"] and reg["device_id"]
    who = await hs.client.get(f"{V3}/account/whoami", headers=auth(reg["access_token"]))
    assert who.json() == {"user_id": "@alice:test.local", "device_id": reg["device_id"], "is_guest": False}
    dev = await hs.client.get(f"{V3}/devices/{reg['device_id']}", headers=auth(reg["access_token"]))
    assert dev.json()["display_name"] == "Web"
    # A reused session is refused.
    r = await hs.client.post(
        f"{V3}/register",
        json={"username": "alice2", "password": "pw", "auth": {"type": "m.login.dummy", "session": body["session"]}},
    )
    assert r.status_code == 400


async def test_register_dummy_without_session_and_r0_alias(hs: Harness) -> None:
    r = await hs.client.post(
        "/_matrix/client/r0/register",
        json={"username": "nio", "password": "pw", "auth": {"type": "m.login.dummy"}, "device_id": "MYDEV"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["device_id"] == "MYDEV"


async def test_register_errors(hs: Harness) -> None:
    await hs.register("taken")
    r = await hs.client.post(f"{V3}/register", json={"username": "taken", "password": "pw"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_USER_IN_USE"
    for bad in ["with space", "é", "a:b", "_reserved", "x" * 260, ""]:
        r = await hs.client.post(f"{V3}/register", json={"username": bad, "password": "pw"})
        assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_USERNAME", bad
    r = await hs.client.post(f"{V3}/register", json={"username": 5, "password": "pw"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await hs.client.post(f"{V3}/register", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    r = await hs.client.post(f"{V3}/register", json=[1, 2])
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await hs.client.post(f"{V3}/register?kind=admin", json={})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    r = await hs.client.post(f"{V3}/register", json={"username": "nopw", "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"
    r = await hs.client.post(f"{V3}/register", json={"username": "u1", "password": "pw", "auth": {"type": "m.login.bogus"}})
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNRECOGNIZED"


async def test_register_downcases_and_inhibit_login(hs: Harness) -> None:
    reg = await hs.register("MixedCase", inhibit_login=True)
    assert reg == {"user_id": "@mixedcase:test.local", "home_server": "test.local"}
    r = await hs.login("MIXEDCASE")
    assert r.status_code == 200 and r.json()["user_id"] == "@mixedcase:test.local"


async def test_register_available(hs: Harness) -> None:
    r = await hs.client.get(f"{V3}/register/available", params={"username": "free"})
    assert r.json() == {"available": True}
    await hs.register("used")
    r = await hs.client.get(f"{V3}/register/available", params={"username": "used"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_USER_IN_USE"
    r = await hs.client.get(f"{V3}/register/available", params={"username": "bad!"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_USERNAME"
    r = await hs.client.get(f"{V3}/register/available")
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"


async def test_guest_registration(hs: Harness) -> None:
    r = await hs.client.post(f"{V3}/register?kind=guest", json={})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    who = await hs.client.get(f"{V3}/account/whoami", headers=auth(token))
    assert who.json()["is_guest"] is True
    # Guests can't manage devices or push rules.
    r = await hs.client.get(f"{V3}/devices", headers=auth(token))
    assert r.status_code == 403 and r.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_login_flows_and_errors(hs: Harness) -> None:
    r = await hs.client.get(f"{V3}/login")
    assert {"type": "m.login.password"} in r.json()["flows"]
    await hs.register("bob", "secret")
    ok = await hs.login("bob", "secret", initial_device_display_name="CLI")
    assert ok.status_code == 200
    body = ok.json()
    assert body["user_id"] == "@bob:test.local" and body["home_server"] == "test.local"
    # Legacy `user` field with a full user ID.
    r = await hs.client.post(f"{V3}/login", json={"type": "m.login.password", "user": "@bob:test.local", "password": "secret"})
    assert r.status_code == 200
    r = await hs.login("bob", "wrong")
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await hs.login("nobody", "x")
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await hs.login("@bob:elsewhere", "secret")
    assert r.status_code == 403
    r = await hs.client.post(f"{V3}/login", json={"type": "m.login.sso"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNKNOWN"
    r = await hs.client.post(f"{V3}/login", json={"type": "m.login.password", "password": "x"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"
    r = await hs.client.post(f"{V3}/login", json={"type": "m.login.password", "user": "bob", "password": 12})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await hs.client.post(f"{V3}/login", content=b"nope")
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"


async def test_login_with_existing_device_replaces_token(hs: Harness) -> None:
    await hs.register("dana")
    first = (await hs.login("dana", device_id="KEEP")).json()
    second = (await hs.login("dana", device_id="KEEP")).json()
    assert first["device_id"] == second["device_id"] == "KEEP"
    r = await hs.client.get(f"{V3}/account/whoami", headers=auth(first["access_token"]))
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"
    r = await hs.client.get(f"{V3}/account/whoami", headers=auth(second["access_token"]))
    assert r.status_code == 200
