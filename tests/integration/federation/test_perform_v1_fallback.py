"""Outbound handshakes fall back to the deprecated v1 routes when the remote does not
have the v2 ones (SyTest 30room-join.pl "Outbound federation can query v1 /send_join",
35room-invite.pl "Outbound federation can send invites via v1 API")."""
from __future__ import annotations

import json

import httpx
import pytest

from libs.errors import MatrixError

from .test_perform_hostile import BOB, REMOTE, ROOM, good_room, remote, setup  # noqa: F401  (fixture)


async def test_send_join_falls_back_to_v1(setup):
    t, events = good_room()
    good = remote(lambda: (200, {"room_version": "11", "event": t}), lambda pdu: (500, {}))
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if "/v2/send_join/" in request.url.path:
            # An old server: no such route, no errcode.
            return httpx.Response(404, stream=httpx.ByteStream(b""))
        if "/v1/send_join/" in request.url.path:
            body = [200, {"origin": REMOTE, "state": events, "auth_chain": events}]
            return httpx.Response(200, stream=httpx.ByteStream(json.dumps(body).encode()),
                                  headers={"content-type": "application/json"})
        return good.handle_request(request)

    performer, rs = setup(httpx.MockTransport(handler))
    assert await performer.perform_join(ROOM, BOB, [REMOTE], {"membership": "join"}) == "$joined"
    assert [p for p in paths if "send_join" in p][0].startswith("/_matrix/federation/v2/")
    assert any(p.startswith("/_matrix/federation/v1/send_join/") for p in paths)
    (_room, _version, _join, state, _chain), = rs.joined
    assert len(state) == 4


async def test_a_v2_refusal_is_not_retried_as_v1(setup):
    t, _events = good_room()
    paths: list[str] = []
    good = remote(lambda: (200, {"room_version": "11", "event": t}),
                  lambda pdu: (404, {"errcode": "M_NOT_FOUND", "error": "no such room"}))

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return good.handle_request(request)

    performer, rs = setup(httpx.MockTransport(handler))
    with pytest.raises(MatrixError) as ei:
        await performer.perform_join(ROOM, BOB, [REMOTE], {"membership": "join"})
    assert ei.value.errcode == "M_NOT_FOUND"
    assert not any("/v1/send_join/" in p for p in paths) and rs.joined == []
