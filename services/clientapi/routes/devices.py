"""/devices, /devices/{deviceId} (GET/PUT/DELETE with UIA), /delete_devices (UIA)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, not_found
from services.clientapi.routes.common import AccountRoutesContext, Body, parse_body
from services.userapi.api import UIA_DELETE_DEVICES, Device
from services.userapi.uia import STAGE_PASSWORD

MAX_DEVICE_NAME = 512


class UpdateDeviceBody(Body):
    display_name: str | None = None


class DeleteDeviceBody(Body):
    auth: dict[str, Any] | None = None


class DeleteDevicesBody(Body):
    devices: list[str]
    auth: dict[str, Any] | None = None


def device_json(d: Device) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ts,
        "user_id": d.user_id,
    }


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    member = ctx.auth.require()

    @r.get("/devices")
    async def list_devices(device: Device = Depends(member)) -> dict[str, Any]:
        return {"devices": [device_json(d) for d in await ctx.userapi.list_devices(device.user_id)]}

    @r.get("/devices/{device_id}")
    async def get_device(device_id: str, device: Device = Depends(member)) -> dict[str, Any]:
        d = await ctx.userapi.get_device(device.user_id, device_id)
        if d is None:
            raise not_found("Unknown device")
        return device_json(d)

    @r.put("/devices/{device_id}")
    async def update_device(device_id: str, request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        body, _ = await parse_body(ctx, request, UpdateDeviceBody, allow_empty=True)
        if body.display_name is not None and len(body.display_name) > MAX_DEVICE_NAME:
            raise MatrixError(400, "M_INVALID_PARAM", "Device name too long")
        if not await ctx.userapi.update_device(device.user_id, device_id, body.display_name):
            raise not_found("Unknown device")
        return {}

    @r.delete("/devices/{device_id}")
    async def delete_device(device_id: str, request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        body, _ = await parse_body(ctx, request, DeleteDeviceBody, allow_empty=True)
        if await ctx.userapi.get_device(device.user_id, device_id) is None:
            raise not_found("Unknown device")
        # The session is bound to this device: it cannot authorise deleting another.
        await ctx.userapi.check_user_interactive_auth(
            f"{UIA_DELETE_DEVICES}:{device_id}", [[STAGE_PASSWORD]], body.auth, device.user_id
        )
        await ctx.userapi.delete_devices(device.user_id, [device_id])
        ctx.auth.invalidate_user(device.user_id)
        return {}

    @r.post("/delete_devices")
    async def delete_devices(request: Request, device: Device = Depends(member)) -> dict[str, Any]:
        body, _ = await parse_body(ctx, request, DeleteDevicesBody)
        await ctx.userapi.check_user_interactive_auth(
            UIA_DELETE_DEVICES, [[STAGE_PASSWORD]], body.auth, device.user_id
        )
        await ctx.userapi.delete_devices(device.user_id, body.devices)
        ctx.auth.invalidate_user(device.user_id)
        return {}

    return r
