"""/user/{userId}/rooms/{roomId}/tags[/{tag}]: room tags, kept as `m.tag` room account data."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, bad_json
from services.clientapi.routes.common import AccountRoutesContext, read_body, require_self
from services.userapi.api import Device

TAG_TYPE = "m.tag"
MAX_TAG_LENGTH = 255


def _check(room_id: str, tag: str | None = None) -> None:
    if not (room_id.startswith("!") and ":" in room_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    if tag is not None and (not tag or len(tag) > MAX_TAG_LENGTH):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid tag")


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    anyone = ctx.auth.require(allow_guest=True)

    async def current(user_id: str, room_id: str) -> dict[str, Any]:
        content = await ctx.userapi.get_account_data(user_id, room_id, TAG_TYPE)
        tags = content.get("tags") if isinstance(content, dict) else None
        return dict(tags) if isinstance(tags, dict) else {}

    @r.get("/user/{user_id}/rooms/{room_id}/tags")
    async def list_tags(user_id: str, room_id: str, device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "get tags")
        _check(room_id)
        return {"tags": await current(user_id, room_id)}

    @r.put("/user/{user_id}/rooms/{room_id}/tags/{tag}")
    async def put_tag(user_id: str, room_id: str, tag: str, request: Request,
                      device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "add tags")
        _check(room_id, tag)
        body = await read_body(ctx, request)
        order = body.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise bad_json("order must be a number")
        tags = await current(user_id, room_id)
        tags[tag] = body
        await ctx.userapi.set_account_data(user_id, room_id, TAG_TYPE, {"tags": tags})
        return {}

    @r.delete("/user/{user_id}/rooms/{room_id}/tags/{tag}")
    async def delete_tag(user_id: str, room_id: str, tag: str, device: Device = Depends(anyone)) -> dict[str, Any]:
        require_self(device, user_id, "remove tags")
        _check(room_id, tag)
        tags = await current(user_id, room_id)
        # Deleting an absent tag succeeds (SyTest's "Can remove tag" deletes one never added).
        if tag in tags:
            del tags[tag]
            await ctx.userapi.set_account_data(user_id, room_id, TAG_TYPE, {"tags": tags})
        return {}

    return r
