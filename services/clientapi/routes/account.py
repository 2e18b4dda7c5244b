"""/logout, /logout/all, /account/whoami, /account/password, /account/deactivate, /account/3pid."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError
from services.clientapi.routes.common import AccountRoutesContext, Body, parse_body
from services.userapi.api import UIA_DEACTIVATE, UIA_PASSWORD, Device
from services.userapi.client_auth import extract_access_token
from services.userapi.passwords import MAX_PASSWORD_LENGTH
from services.userapi.uia import STAGE_PASSWORD

PASSWORD_FLOWS = [[STAGE_PASSWORD]]


class PasswordBody(Body):
    new_password: str
    logout_devices: bool = True
    auth: dict[str, Any] | None = None


class DeactivateBody(Body):
    auth: dict[str, Any] | None = None
    id_server: str | None = None
    erase: bool = False


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    member = ctx.auth.require()
    anyone = ctx.auth.require(allow_guest=True)

    @r.post("/logout")
    async def logout(request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        token = extract_access_token(request, ctx.config.client.allow_query_access_token)
        assert token is not None  # the dependency already authenticated it
        await ctx.userapi.logout(token)
        ctx.auth.invalidate_user(device.user_id)
        return {}

    @r.post("/logout/all")
    async def logout_all(device: Device = Depends(anyone)) -> dict[str, Any]:
        await ctx.userapi.logout_all(device.user_id)
        ctx.auth.invalidate_user(device.user_id)
        return {}

    @r.get("/account/whoami")
    async def whoami(device: Device = Depends(anyone)) -> dict[str, Any]:
        return {"user_id": device.user_id, "device_id": device.device_id, "is_guest": device.is_guest}

    @r.get("/account/3pid")
    async def threepids(device: Device = Depends(member)) -> dict[str, Any]:
        return {"threepids": []}

    @r.post("/account/password")
    async def change_password(request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        body, _ = await parse_body(ctx, request, PasswordBody)
        if len(body.new_password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Password too long")
        await ctx.userapi.check_user_interactive_auth(UIA_PASSWORD, PASSWORD_FLOWS, body.auth, device.user_id)
        await ctx.userapi.set_password(
            device.user_id, body.new_password,
            logout_devices_except=device.device_id if body.logout_devices else None,
        )
        if body.logout_devices:
            ctx.auth.invalidate_user(device.user_id)
        return {}

    @r.post("/account/deactivate")
    async def deactivate(request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        body, _ = await parse_body(ctx, request, DeactivateBody, allow_empty=True)
        # An application service deactivates the users it manages without UIA.
        if ctx.auth.appservice_for(request) is None:
            await ctx.userapi.check_user_interactive_auth(UIA_DEACTIVATE, PASSWORD_FLOWS, body.auth, device.user_id)
        await ctx.userapi.deactivate_account(device.user_id)
        ctx.auth.invalidate_user(device.user_id)
        return {"id_server_unbind_result": "no-support"}

    return r
