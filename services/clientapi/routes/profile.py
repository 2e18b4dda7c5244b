"""/profile/{userId}[/displayname|/avatar_url]: GET for anyone, PUT only for oneself."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, bad_json, not_found
from services.clientapi.routes.common import AccountRoutesContext, read_body, require_self
from services.userapi.api import Device

MAX_DISPLAYNAME = 256
MAX_AVATAR_URL = 1000


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    anyone = ctx.auth.require(allow_guest=True)

    async def profile_of(user_id: str) -> dict[str, Any]:
        server = user_id.split(":", 1)[1] if ":" in user_id else ""
        if ctx.remote_profile is not None and server and server != ctx.config.server_name:
            remote = await ctx.remote_profile(user_id)
            if remote is None:
                raise not_found("Profile not found")
            return remote
        prof = await ctx.userapi.get_profile(user_id)
        if prof is None:
            raise not_found("Profile not found")
        return prof

    @r.get("/profile/{user_id}")
    async def get_profile(user_id: str) -> dict[str, Any]:
        return await profile_of(user_id)

    @r.get("/profile/{user_id}/displayname")
    async def get_displayname(user_id: str) -> dict[str, Any]:
        prof = await profile_of(user_id)
        return {"displayname": prof["displayname"]} if "displayname" in prof else {}

    @r.get("/profile/{user_id}/avatar_url")
    async def get_avatar_url(user_id: str) -> dict[str, Any]:
        prof = await profile_of(user_id)
        return {"avatar_url": prof["avatar_url"]} if "avatar_url" in prof else {}

    async def new_value(request: Request, field: str, max_len: int) -> str | None:
        body = await read_body(ctx, request)
        value = body.get(field)
        if value is not None and not isinstance(value, str):
            raise bad_json(f"{field} must be a string")
        if value is not None and len(value) > max_len:
            raise MatrixError(400, "M_BAD_JSON", f"{field} is too long (max {max_len})")
        return value

    @r.put("/profile/{user_id}/displayname")
    async def set_displayname(user_id: str, request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "set the display name")
        value = await new_value(request, "displayname", MAX_DISPLAYNAME)
        await ctx.userapi.set_displayname(user_id, value)
        return {}

    @r.put("/profile/{user_id}/avatar_url")
    async def set_avatar_url(user_id: str, request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "set the avatar")
        value = await new_value(request, "avatar_url", MAX_AVATAR_URL)
        await ctx.userapi.set_avatar_url(user_id, value)
        return {}

    return r
