"""Tokens, /logout, /logout/all, /account/password, /account/deactivate, /devices, /capabilities."""
from __future__ import annotations

from typing import Any

import pytest

from tests.integration.clientapi_account.conftest import V3, Harness, auth

pytestmark = pytest.mark.asyncio(loop_scope="module")


def pw_auth(user: str, password: str, session: str | None = None) -> dict[str, Any]:
    a: dict[str, Any] = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    if session:
        a["session"] = session
    return a


async def test_missing_and_unknown_token(hs: Harness) -> None:
    r = await hs.client.get(f"{V3}/account/whoami")
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await hs.client.get(f"{V3}/account/whoami", headers=auth("bogus"))
    assert r.status_code == 401 and r.json() == {"errcode": "M_UNKNOWN_TOKEN", "error": r.json()["error"], "soft_logout": False}
    r = await hs.client.get(f"{V3}/account/whoami", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    # The query parameter is refused unless configured.
    reg = await hs.register("qp")
    r = await hs.client.get(f"{V3}/account/whoami", params={"access_token": reg["access_token"]})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    hs.config.client.allow_query_access_token = True
    try:
        r = await hs.client.get(f"{V3}/account/whoami", params={"access_token": reg["access_token"]})
        assert r.status_code == 200 and r.json()["user_id"] == "@qp:test.local"
    finally:
        hs.config.client.allow_query_access_token = False


async def test_logout_and_logout_all(hs: Harness) -> None:
    reg = await hs.register("lo")
    a = reg["access_token"]
    b = (await hs.login("lo")).json()["access_token"]
    c = (await hs.login("lo")).json()["access_token"]
    assert (await hs.client.post(f"{V3}/logout", headers=auth(a))).status_code == 200
    r = await hs.client.get(f"{V3}/account/whoami", headers=auth(a))
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert (await hs.client.get(f"{V3}/account/whoami", headers=auth(b))).status_code == 200
    devs = (await hs.client.get(f"{V3}/devices", headers=auth(b))).json()["devices"]
    assert len(devs) == 2
    assert (await hs.client.post(f"{V3}/logout/all", headers=auth(b))).status_code == 200
    for t in (b, c):
        assert (await hs.client.get(f"{V3}/account/whoami", headers=auth(t))).status_code == 401


async def test_devices_crud(hs: Harness) -> None:
    reg = await hs.register("dv")
    tok = reg["access_token"]
    other = (await hs.login("dv", initial_device_display_name="Second")).json()
    r = await hs.client.get(f"{V3}/devices", headers=auth(tok))
    ids = {d["device_id"] for d in r.json()["devices"]}
    assert ids == {reg["device_id"], other["device_id"]}
    mine = next(d for d in r.json()["devices"] if d["device_id"] == reg["device_id"])
    assert mine["user_id"] == "@dv:test.local" and mine["last_seen_ts"] and mine["last_seen_ip"]
    r = await hs.client.put(f"{V3}/devices/{other['device_id']}", headers=auth(tok), json={"display_name": "Renamed"})
    assert r.status_code == 200
    r = await hs.client.get(f"{V3}/devices/{other['device_id']}", headers=auth(tok))
    assert r.json()["display_name"] == "Renamed"
    r = await hs.client.put(f"{V3}/devices/{other['device_id']}", headers=auth(tok), json={"display_name": 3})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    assert (await hs.client.get(f"{V3}/devices/NOPE", headers=auth(tok))).status_code == 404
    assert (await hs.client.put(f"{V3}/devices/NOPE", headers=auth(tok), json={})).status_code == 404

    # DELETE needs UIA with the user's password.
    r = await hs.client.request("DELETE", f"{V3}/devices/{other['device_id']}", headers=auth(tok))
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}]
    session = r.json()["session"]
    r = await hs.client.request("DELETE", f"{V3}/devices/{other['device_id']}", headers=auth(tok),
                                json={"auth": pw_auth("dv", "wrong", session)})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await hs.client.request("DELETE", f"{V3}/devices/{other['device_id']}", headers=auth(tok),
                                json={"auth": pw_auth("dv", "pw", session)})
    assert r.status_code == 200, r.text
    # The deleted device's token no longer works.
    r = await hs.client.get(f"{V3}/account/whoami", headers=auth(other["access_token"]))
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert (await hs.client.request("DELETE", f"{V3}/devices/NOPE", headers=auth(tok))).status_code == 404


async def test_delete_devices_bulk(hs: Harness) -> None:
    reg = await hs.register("bulk")
    t2 = (await hs.login("bulk")).json()
    t3 = (await hs.login("bulk")).json()
    r = await hs.client.post(f"{V3}/delete_devices", headers=auth(reg["access_token"]),
                             json={"devices": [t2["device_id"], t3["device_id"]]})
    assert r.status_code == 401
    r = await hs.client.post(f"{V3}/delete_devices", headers=auth(reg["access_token"]),
                             json={"devices": [t2["device_id"], t3["device_id"]], "auth": pw_auth("bulk", "pw", r.json()["session"])})
    assert r.status_code == 200
    devs = (await hs.client.get(f"{V3}/devices", headers=auth(reg["access_token"]))).json()["devices"]
    assert [d["device_id"] for d in devs] == [reg["device_id"]]
    r = await hs.client.post(f"{V3}/delete_devices", headers=auth(reg["access_token"]), json={"devices": "x"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


async def test_password_change(hs: Harness) -> None:
    reg = await hs.register("pwc", "old")
    keep = (await hs.login("pwc", "old")).json()["access_token"]
    r = await hs.client.post(f"{V3}/account/password", headers=auth(reg["access_token"]), json={"new_password": "new"})
    assert r.status_code == 401 and "session" in r.json()
    r = await hs.client.post(
        f"{V3}/account/password", headers=auth(reg["access_token"]),
        json={"new_password": "new", "logout_devices": False, "auth": pw_auth("pwc", "old", r.json()["session"])},
    )
    assert r.status_code == 200, r.text
    # logout_devices=false keeps the other device.
    assert (await hs.client.get(f"{V3}/account/whoami", headers=auth(keep))).status_code == 200
    assert (await hs.login("pwc", "old")).status_code == 403
    assert (await hs.login("pwc", "new")).status_code == 200
    r = await hs.client.post(
        f"{V3}/account/password", headers=auth(reg["access_token"]),
        json={"new_password": "newer", "auth": pw_auth("pwc", "new")},
    )
    assert r.status_code == 200
    # Default logout_devices=true: other devices are logged out, this one stays.
    assert (await hs.client.get(f"{V3}/account/whoami", headers=auth(keep))).status_code == 401
    assert (await hs.client.get(f"{V3}/account/whoami", headers=auth(reg["access_token"]))).status_code == 200
    r = await hs.client.post(f"{V3}/account/password", headers=auth(reg["access_token"]), json={"new_password": 1})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


async def test_deactivate(hs: Harness) -> None:
    reg = await hs.register("gone", "pw")
    r = await hs.client.post(f"{V3}/account/deactivate", headers=auth(reg["access_token"]), json={})
    assert r.status_code == 401
    r = await hs.client.post(f"{V3}/account/deactivate", headers=auth(reg["access_token"]),
                             json={"auth": pw_auth("gone", "pw", r.json()["session"])})
    assert r.status_code == 200 and r.json() == {"id_server_unbind_result": "no-support"}
    assert (await hs.client.get(f"{V3}/account/whoami", headers=auth(reg["access_token"]))).status_code == 401
    r = await hs.login("gone", "pw")
    assert r.status_code == 403 and r.json()["errcode"] == "M_USER_DEACTIVATED"
    r = await hs.client.get(f"{V3}/register/available", params={"username": "gone"})
    assert r.json()["errcode"] == "M_USER_IN_USE"


async def test_capabilities(hs: Harness) -> None:
    reg = await hs.register("caps")
    r = await hs.client.get(f"{V3}/capabilities", headers=auth(reg["access_token"]))
    caps = r.json()["capabilities"]
    assert caps["m.room_versions"]["default"] == "11"
    assert set(caps["m.room_versions"]["available"]) == {str(n) for n in range(1, 13)}
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}
    assert (await hs.client.get(f"{V3}/capabilities")).status_code == 401


async def test_unknown_endpoint_is_unrecognized(hs: Harness) -> None:
    r = await hs.client.get(f"{V3}/no/such/thing")
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
