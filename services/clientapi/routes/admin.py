"""GET /admin/whois/{userId}: the user's devices and their last connection (self or server admins)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from libs.errors import forbidden
from services.clientapi.routes.common import AccountRoutesContext
from services.userapi.api import Device


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    member = ctx.auth.require()

    @r.get("/admin/whois/{user_id}")
    async def whois(user_id: str, device: Device = Depends(member)) -> dict[str, Any]:
        if device.user_id != user_id:
            me = await ctx.userapi.get_account(device.user_id)
            if me is None or not me.is_admin:
                raise forbidden("Only server admins can look up other users")
        devices: dict[str, Any] = {}
        for d in await ctx.userapi.list_devices(user_id):
            conns = []
            if d.last_seen_ts is not None:
                # User agents are not recorded.
                conns.append({"ip": d.last_seen_ip, "last_seen": d.last_seen_ts, "user_agent": None})
            devices[d.device_id] = {"sessions": [{"connections": conns}]}
        return {"user_id": user_id, "devices": devices}

    return r
