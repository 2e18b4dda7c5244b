"""/presence/{userId}/status: minimal presence (what a user last set; no timeouts, no federation)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, not_found
from services.clientapi.routes.common import AccountRoutesContext, Body, parse_body, require_self
from services.userapi.api import Device

MAX_STATUS_MSG = 2048


class PresenceBody(Body):
    presence: str
    status_msg: str | None = None


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    anyone = ctx.auth.require(allow_guest=True)

    @r.get("/presence/{user_id}/status")
    async def get_status(user_id: str, device: Device = Depends(anyone)) -> dict[str, Any]:
        status = await ctx.userapi.get_presence(user_id)
        if status is None:
            raise not_found("Unknown user")
        return status

    @r.put("/presence/{user_id}/status")
    async def set_status(user_id: str, request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "set presence")
        body, _ = await parse_body(ctx, request, PresenceBody)
        if body.status_msg is not None and len(body.status_msg) > MAX_STATUS_MSG:
            raise MatrixError(400, "M_INVALID_PARAM", "status_msg too long")
        await ctx.userapi.set_presence(device.user_id, body.presence, body.status_msg)
        return {}

    return r
