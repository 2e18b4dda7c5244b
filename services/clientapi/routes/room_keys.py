"""/room_keys/version[/{version}] and /room_keys/keys[/{roomId}[/{sessionId}]]: server-side key backups."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from services.clientapi.routes.common import AccountRoutesContext, read_body
from services.userapi.api import Device


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    member = ctx.auth.require()
    api = ctx.userapi

    @r.post("/room_keys/version")
    async def create_version(request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        return {"version": await api.create_backup_version(device.user_id, await read_body(ctx, request))}

    @r.get("/room_keys/version")
    async def latest_version(device: Device = Depends(member)) -> dict[str, Any]:
        return await api.get_backup_version(device.user_id, None)

    @r.get("/room_keys/version/{version}")
    async def get_version(version: str, device: Device = Depends(member)) -> dict[str, Any]:
        return await api.get_backup_version(device.user_id, version)

    @r.put("/room_keys/version/{version}")
    async def update_version(version: str, request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        await api.update_backup_version(device.user_id, version, await read_body(ctx, request))
        return {}

    @r.delete("/room_keys/version/{version}")
    async def delete_version(version: str, device: Device = Depends(member)) -> dict[str, Any]:
        await api.delete_backup_version(device.user_id, version)
        return {}

    @r.put("/room_keys/keys")
    @r.put("/room_keys/keys/{room_id}")
    @r.put("/room_keys/keys/{room_id}/{session_id}")
    async def put_keys(request: Request, version: str | None = None, room_id: str | None = None,
                       session_id: str | None = None, device: Device = Depends(member)) -> dict[str, Any]:
        body = await read_body(ctx, request)
        return await api.put_backup_keys(device.user_id, version, room_id, session_id, body)

    @r.get("/room_keys/keys")
    @r.get("/room_keys/keys/{room_id}")
    @r.get("/room_keys/keys/{room_id}/{session_id}")
    async def get_keys(version: str | None = None, room_id: str | None = None, session_id: str | None = None,
                       device: Device = Depends(member)) -> dict[str, Any]:
        return await api.get_backup_keys(device.user_id, version, room_id, session_id)

    @r.delete("/room_keys/keys")
    @r.delete("/room_keys/keys/{room_id}")
    @r.delete("/room_keys/keys/{room_id}/{session_id}")
    async def delete_keys(version: str | None = None, room_id: str | None = None, session_id: str | None = None,
                          device: Device = Depends(member)) -> dict[str, Any]:
        return await api.delete_backup_keys(device.user_id, version, room_id, session_id)

    return r
