"""SyTest 50federation regressions (each test names the SyTest case it mirrors), on an
embedded homeserver with a fake remote server (tests/integration/roomserver/fedhelpers)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from .fedhelpers import REMOTE
from .test_federated_http import BOB, fed_request, hs, http, register  # noqa: F401  (fixtures)


async def _room(http: httpx.AsyncClient, alice: dict[str, str]) -> str:
    r = await http.post("/_matrix/client/v3/createRoom", json={"preset": "public_chat", "room_version": "10"},
                        headers=alice)
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


def _make(kind: str, room_id: str, user: str = BOB) -> str:
    return f"/_matrix/federation/v1/make_{kind}/{quote(room_id)}/{quote(user)}?ver=10"


async def test_make_join_when_all_local_users_left(hs: Any, http: httpx.AsyncClient) -> None:
    # 30room-join.pl "Inbound /make_join rejects attempts to join rooms where all users have left"
    alice = await register(http, "alice")
    room_id = await _room(http, alice)
    assert (await fed_request(http, "GET", _make("join", room_id))).status_code == 200
    r = await http.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", json={}, headers=alice)
    assert r.status_code == 200
    r = await fed_request(http, "GET", _make("join", room_id))
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND", r.text


async def test_server_acl_applies_to_handshakes_and_get_missing_events(hs: Any, http: httpx.AsyncClient) -> None:
    # 50server-acl-endpoints.pl "Banned servers cannot /make_join", "/make_leave",
    # "get missing events" (whose permitted form has an empty body).
    alice = await register(http, "alice")
    room_id = await _room(http, alice)
    gme = f"/_matrix/federation/v1/get_missing_events/{quote(room_id)}"
    # Allowed (world_readable so a server with no member may read): an empty body is no error.
    r = await http.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.history_visibility",
                       json={"history_visibility": "world_readable"}, headers=alice)
    assert r.status_code == 200
    r = await fed_request(http, "POST", gme, {})
    assert r.status_code == 200 and r.json() == {"events": []}, r.text
    assert (await fed_request(http, "GET", _make("join", room_id))).status_code == 200
    r = await http.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.server_acl",
                       json={"allow": ["*"], "deny": [REMOTE]}, headers=alice)
    assert r.status_code == 200, r.text
    for kind in ("join", "leave"):
        r = await fed_request(http, "GET", _make(kind, room_id))
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", (kind, r.text)
    r = await fed_request(http, "POST", gme, {})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
