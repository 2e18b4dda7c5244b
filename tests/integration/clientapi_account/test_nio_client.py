"""matrix-nio (a real client library) against a real uvicorn server on loopback."""
from __future__ import annotations

import asyncio

import nio
import uvicorn

from tests.integration.clientapi_account.conftest import build_app, make_config
from tests.ports import free_port as _free_port



async def test_nio_register_login_whoami_logout(tmp_path) -> None:
    app, service, _ = await build_app(tmp_path, make_config())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        url = f"http://127.0.0.1:{port}"

        client = nio.AsyncClient(url, "niouser")
        try:
            reg = await client.register("niouser", "n10-pass", device_name="nio device")
            assert isinstance(reg, nio.RegisterResponse), reg
            assert reg.user_id == "@niouser:test.local"
            who = await client.whoami()
            assert isinstance(who, nio.WhoamiResponse) and who.user_id == "@niouser:test.local"
            assert who.device_id == reg.device_id
        finally:
            await client.close()

        client = nio.AsyncClient(url, "@niouser:test.local")
        try:
            login = await client.login("n10-pass", device_name="second")
            assert isinstance(login, nio.LoginResponse), login
            assert login.device_id != reg.device_id
            devices = await client.devices()
            assert isinstance(devices, nio.DevicesResponse)
            assert {d.id for d in devices.devices} == {reg.device_id, login.device_id}
            stranger = nio.AsyncClient(url, "niouser")
            try:
                bad = await stranger.login("wrong")
            finally:
                await stranger.close()
            assert isinstance(bad, nio.LoginError) and bad.status_code == "M_FORBIDDEN"
            out = await client.logout()
            assert isinstance(out, nio.LogoutResponse)
            assert await service.api.query_access_token(login.access_token) is None
        finally:
            await client.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await service.db.close()
