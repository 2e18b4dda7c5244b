"""GET/POST /login (m.login.password with m.id.user or the legacy `user` field)."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request

from libs.errors import MatrixError, forbidden
from services.clientapi.routes.common import AccountRoutesContext, Body, client_ip, parse_body, ratelimit
from services.userapi.identifiers import full_user_id, local_localpart

log = logging.getLogger(__name__)


class LoginBody(Body):
    type: str
    identifier: dict[str, Any] | None = None
    user: str | None = None
    password: str | None = None
    device_id: str | None = None
    initial_device_display_name: str | None = None


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    server_name = ctx.config.server_name

    @r.get("/login")
    async def login_flows() -> dict[str, Any]:
        return {"flows": [{"type": "m.login.password"}]}

    @r.post("/login")
    async def login(request: Request) -> dict[str, Any]:
        ratelimit(ctx, "login", client_ip(request))
        body, _ = await parse_body(ctx, request, LoginBody)
        if body.type != "m.login.password":
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {body.type}")
        who = body.user
        if body.identifier is not None:
            if body.identifier.get("type") != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN", "Only m.id.user identifiers are supported")
            who = body.identifier.get("user")
        if not isinstance(who, str) or not who:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing user identifier")
        if body.password is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing password")
        localpart = local_localpart(who, server_name)
        if localpart is None:
            raise forbidden("Invalid username or password")
        user_id = full_user_id(localpart, server_name)
        account = await ctx.userapi.get_account(user_id)
        if account is not None and account.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        if account is None or not await ctx.userapi.check_password(user_id, body.password):
            log.info("failed login for %s", user_id)
            raise forbidden("Invalid username or password")
        if body.device_id is not None and not (0 < len(body.device_id) <= 255):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid device_id")
        result = await ctx.userapi.create_device(user_id, body.device_id, body.initial_device_display_name)
        return {
            "user_id": result.user_id,
            "access_token": result.access_token,
            "device_id": result.device_id,
            "home_server": server_name,
            "well_known": {"m.homeserver": {"base_url": ctx.config.public_baseurl}},
        }

    return r
