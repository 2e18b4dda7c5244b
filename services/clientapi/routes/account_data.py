"""/user/{userId}/account_data/{type} and /user/{userId}/rooms/{roomId}/account_data/{type}."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, not_found
from services.clientapi.routes.common import AccountRoutesContext, read_body, require_self
from services.userapi.api import Device

MAX_TYPE_LENGTH = 255


def _check(room_id: str | None, data_type: str) -> None:
    if room_id is not None and not (room_id.startswith("!") and ":" in room_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    if not data_type or len(data_type) > MAX_TYPE_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid account data type")


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    anyone = ctx.auth.require(allow_guest=True)

    async def get(user_id: str, room_id: str | None, data_type: str, device: Device) -> dict[str, Any]:
        require_self(device, user_id, "get account data")
        _check(room_id, data_type)
        content = await ctx.userapi.get_account_data(user_id, room_id or "", data_type)
        if content is None:
            raise not_found("Account data not found")
        return content

    async def put(user_id: str, room_id: str | None, data_type: str, request: Request, device: Device) -> dict[str, Any]:
        require_self(device, user_id, "add account data")
        _check(room_id, data_type)
        content = await read_body(ctx, request)
        await ctx.userapi.set_account_data(user_id, room_id or "", data_type, content)
        return {}

    @r.get("/user/{user_id}/account_data/{data_type}")
    async def get_global(user_id: str, data_type: str, device: Device = Depends(anyone)) -> dict[str, Any]:
        return await get(user_id, None, data_type, device)

    @r.put("/user/{user_id}/account_data/{data_type}")
    async def put_global(user_id: str, data_type: str, request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        return await put(user_id, None, data_type, request, device)

    @r.get("/user/{user_id}/rooms/{room_id}/account_data/{data_type}")
    async def get_room(user_id: str, room_id: str, data_type: str, device: Device = Depends(anyone)) -> dict[str, Any]:
        return await get(user_id, room_id, data_type, device)

    @r.put("/user/{user_id}/rooms/{room_id}/account_data/{data_type}")
    async def put_room(
        user_id: str, room_id: str, data_type: str, request: Request, device: Device = Depends(anyone)
    ) -> dict[str, Any]:
        return await put(user_id, room_id, data_type, request, device)

    return r
