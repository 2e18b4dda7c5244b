"""Federation device and key queries (/user/devices, /user/keys/query, /user/keys/claim),
answered for our own users only, over HTTP with X-Matrix auth."""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from libs.config.model import FederationConfig
from libs.events.server_keys import build_server_keys, verify_server_keys
from libs.http import install_error_handlers
from services.federationapi.service import FederationService
from services.federationapi.xmatrix import sign_request
from services.userapi.api import Device

from .test_send import REMOTE, US, FakeRoomserver, NoNetwork, RecordingSink

ALICE = "@alice:us.test"
KEYS = {"user_id": ALICE, "device_id": "D1", "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {"ed25519:D1": "pub"}, "signatures": {ALICE: {"ed25519:D1": "sig"}}}


class KeysUserapi:
    def __init__(self) -> None:
        self.otks = {(ALICE, "D1"): [("signed_curve25519:AAAA", {"key": "k1"})]}
        self.queried: list[dict[str, list[str]]] = []

    async def list_devices(self, user_id: str) -> list[Device]:
        return [Device(user_id, "D2", None), Device(user_id, "D1", "Laptop")] if user_id == ALICE else []

    async def query_keys(self, wanted: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        self.queried.append(wanted)
        return {u: ({"D1": {**KEYS, "unsigned": {"device_display_name": "Laptop"}}} if u == ALICE else {})
                for u in wanted}

    async def claim_keys(self, wanted: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for u, devs in wanted.items():
            for d, alg in devs.items():
                got = self.otks.get((u, d))
                if got and got[0][0].startswith(alg + ":"):
                    kid, key = got.pop(0)
                    out.setdefault(u, {})[d] = {kid: key}
        return out


@pytest.fixture
async def fed(fed_store):
    ua = KeysUserapi()
    svc = FederationService("us.test", [US], "0.1", config=FederationConfig(enabled=True, trusted_key_servers=[]),
                            db=fed_store.db, roomserver=FakeRoomserver(), userapi=ua, sink=RecordingSink(),
                            client=NoNetwork())
    body = build_server_keys("remote.test", [REMOTE], int(time.time() * 1000) + 3600_000)
    await svc.keyring.store_response(body, verify_server_keys(body, "remote.test"))
    app = FastAPI()
    install_error_handlers(app)
    for r in svc.routers:
        app.include_router(r)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, ua


async def call(c: httpx.AsyncClient, method: str, path: str, body: Any = None) -> httpx.Response:
    uri = "/_matrix/federation/v1" + path
    h = sign_request(REMOTE, "remote.test", "us.test", method, uri, body)
    return await c.request(method, uri, json=body, headers={"Authorization": h})


async def test_user_devices(fed, fed_store) -> None:
    c, _ = fed
    r = await call(c, "GET", f"/user/devices/{quote(ALICE)}")
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["user_id"] == ALICE and b["stream_id"] == 0       # no update announced yet
    await fed_store.set_device_list(ALICE, 1234, ["D1", "D2"])
    assert (await call(c, "GET", f"/user/devices/{quote(ALICE)}")).json()["stream_id"] == 1234
    assert b["devices"] == [{"device_id": "D1", "keys": KEYS, "device_display_name": "Laptop"},
                            {"device_id": "D2"}]
    r = await call(c, "GET", f"/user/devices/{quote('@bob:remote.test')}")
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    r = await c.get(f"/_matrix/federation/v1/user/devices/{quote(ALICE)}")   # unsigned
    assert r.status_code == 401


async def test_keys_query_and_claim(fed) -> None:
    c, ua = fed
    r = await call(c, "POST", "/user/keys/query", {"device_keys": {ALICE: [], "@bob:remote.test": []}})
    assert r.status_code == 200, r.text
    assert r.json() == {"device_keys": {ALICE: {"D1": {**KEYS, "unsigned": {"device_display_name": "Laptop"}}}}}
    assert ua.queried == [{ALICE: []}]       # the remote user was never asked of the userapi
    for bad in ({}, {"device_keys": []}, {"device_keys": {ALICE: "D1"}}, {"device_keys": {ALICE: [1]}}):
        r = await call(c, "POST", "/user/keys/query", bad)
        assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON", bad
    claim = {"one_time_keys": {ALICE: {"D1": "signed_curve25519"}, "@bob:remote.test": {"X": "signed_curve25519"}}}
    r = await call(c, "POST", "/user/keys/claim", claim)
    assert r.status_code == 200, r.text
    assert r.json() == {"one_time_keys": {ALICE: {"D1": {"signed_curve25519:AAAA": {"key": "k1"}}}}}
    r = await call(c, "POST", "/user/keys/claim", claim)       # used up
    assert r.json() == {"one_time_keys": {}}
    r = await call(c, "POST", "/user/keys/claim", {"one_time_keys": {ALICE: {"D1": 5}}})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
