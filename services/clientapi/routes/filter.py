"""POST /user/{userId}/filter, GET /user/{userId}/filter/{filterId}."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import not_found
from services.clientapi.routes.common import AccountRoutesContext, read_body, require_self
from services.userapi.api import Device


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    anyone = ctx.auth.require(allow_guest=True)

    @r.post("/user/{user_id}/filter")
    async def create_filter(user_id: str, request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "create filters")
        body = await read_body(ctx, request)
        return {"filter_id": await ctx.userapi.create_filter(user_id, body)}

    @r.get("/user/{user_id}/filter/{filter_id}")
    async def get_filter(user_id: str, filter_id: str, device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "get filters")
        found = await ctx.userapi.get_filter(user_id, filter_id)
        if found is None:
            raise not_found("No such filter")
        return found

    return r
