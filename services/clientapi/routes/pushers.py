"""GET /pushers and POST /pushers/set (stored in the userapi; delivery is not done yet)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from services.clientapi.routes.common import AccountRoutesContext, read_body
from services.userapi.api import Device


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    member = ctx.auth.require()

    @r.get("/pushers")
    async def get_pushers(device: Device = Depends(member)) -> dict[str, Any]:
        return {"pushers": await ctx.userapi.get_pushers(device.user_id)}

    @r.post("/pushers/set")
    async def set_pusher(request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        body = await read_body(ctx, request)
        await ctx.userapi.set_pusher(device.user_id, device.device_id, body)
        return {}

    return r
