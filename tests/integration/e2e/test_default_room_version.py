"""`client.default_room_version`: createRoom without `room_version` and /capabilities
follow it (the SyTest adapter sets "10": SyTest's fake servers know v10 redaction only)."""
from __future__ import annotations

import httpx

from tests.integration.conftest import MatrixTestClient, _config


async def test_configured_default_room_version(tmp_path) -> None:
    from axon.embedded import build_homeserver

    cfg = _config(tmp_path)
    cfg.client.default_room_version = "10"
    hs = await build_homeserver(cfg, bcrypt_rounds=4)
    await hs.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hs.app), base_url="http://hs",
                                     timeout=30) as c:
            matrix = MatrixTestClient(c)
            alice = await matrix.register()
            room = await matrix.create_room(alice)
            create = await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.create")
            assert create["room_version"] == "10"
            room11 = await matrix.create_room(alice, room_version="11")
            create = await matrix.request(alice, "GET", f"/rooms/{room11}/state/m.room.create")
            assert create["room_version"] == "11"
            caps = await matrix.request(alice, "GET", "/capabilities")
            assert caps["capabilities"]["m.room_versions"]["default"] == "10"
    finally:
        await hs.stop()
