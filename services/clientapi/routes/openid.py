"""OpenID: POST /user/{userId}/openid/request_token (client API) and the
GET /_matrix/federation/v1/openid/userinfo exchange a third party calls."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError
from services.clientapi.routes.common import AccountRoutesContext, read_body, require_self
from services.userapi.api import Device


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    member = ctx.auth.require()

    @r.post("/user/{user_id}/openid/request_token")
    async def request_token(user_id: str, request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        require_self(device, user_id, "request OpenID tokens")
        await read_body(ctx, request, allow_empty=True)
        token, expires_in = await ctx.userapi.create_openid_token(user_id)
        return {"access_token": token, "token_type": "Bearer",
                "matrix_server_name": ctx.config.server_name, "expires_in": expires_in}

    return r


def userinfo_router(ctx: AccountRoutesContext) -> APIRouter:
    r = APIRouter()

    @r.get("/_matrix/federation/v1/openid/userinfo")
    async def userinfo(access_token: str | None = None) -> dict[str, Any]:
        if not access_token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access_token")
        user_id = await ctx.userapi.openid_userinfo(access_token)
        if user_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or expired OpenID token")
        return {"sub": user_id}

    return r
