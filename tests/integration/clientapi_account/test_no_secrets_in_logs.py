"""Passwords and access tokens never reach the logs."""
from __future__ import annotations

import logging

import pytest

from tests.integration.clientapi_account.conftest import V3, Harness, auth

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_register_login_logout_log_no_secrets(hs: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Sup3r-Secret-Pa55"
    reg = await hs.register("secretive", password)
    ok = await hs.login("secretive", password)
    bad = await hs.login("secretive", password + "x")
    assert bad.status_code == 403
    r = await hs.client.post(f"{V3}/account/password", headers=auth(reg["access_token"]),
                             json={"new_password": "N3w-" + password,
                                   "auth": {"type": "m.login.password", "user": "secretive", "password": password}})
    assert r.status_code == 200
    await hs.client.post(f"{V3}/logout", headers=auth(ok.json()["access_token"]))
    text = "\n".join(rec.getMessage() + repr(rec.args) for rec in caplog.records)
    assert any("secretive" in rec.getMessage() for rec in caplog.records)  # something was logged
    for secret in (password, reg["access_token"], ok.json()["access_token"]):
        assert secret not in text
