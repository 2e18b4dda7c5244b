"""GET /capabilities."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from libs.events.room_versions import DEFAULT_ROOM_VERSION, ROOM_VERSIONS
from services.clientapi.routes.common import AccountRoutesContext
from services.userapi.api import Device


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)

    @r.get("/capabilities")
    async def capabilities(device: Device = Depends(ctx.auth.require(allow_guest=True))) -> dict[str, Any]:
        return {
            "capabilities": {
                "m.change_password": {"enabled": True},
                "m.room_versions": {
                    "default": ctx.config.client.default_room_version or DEFAULT_ROOM_VERSION,
                    "available": {v: ("stable" if rv.stable else "unstable") for v, rv in ROOM_VERSIONS.items()},
                },
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
            }
        }

    return r
