"""/keys/upload, /keys/query, /keys/claim (/keys/changes is the syncapi's): a small local E2E key store
(local users only; remote users are reported under `failures`)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import bad_json
from services.clientapi.routes.common import AccountRoutesContext, read_body
from services.userapi.api import Device


def _obj(body: dict[str, Any], key: str) -> dict[str, Any]:
    v = body.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad_json(f"'{key}' must be an object")
    return v


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    anyone = ctx.auth.require(allow_guest=True)
    server_name = ctx.config.server_name

    def failures(users: list[str]) -> dict[str, Any]:
        remote = sorted({u.partition(":")[2] for u in users if u.partition(":")[2] != server_name})
        return {s: {"status": 503, "message": "Federation is not available"} for s in remote}

    @r.post("/keys/upload")
    async def upload(request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        body = await read_body(ctx, request)
        dk = body.get("device_keys")
        if dk is not None and not isinstance(dk, dict):
            raise bad_json("'device_keys' must be an object")
        counts = await ctx.userapi.upload_keys(device.user_id, device.device_id, dk,
                                               _obj(body, "one_time_keys"), _obj(body, "fallback_keys"))
        return {"one_time_key_counts": counts}

    @r.post("/keys/query")
    async def query(request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        body = await read_body(ctx, request)
        wanted = _obj(body, "device_keys")
        clean: dict[str, list[str]] = {}
        for user_id, devs in wanted.items():
            if not isinstance(devs, list) or not all(isinstance(d, str) for d in devs):
                raise bad_json("device_keys values must be lists of device IDs")
            clean[user_id] = devs
        return {"device_keys": await ctx.userapi.query_keys(clean), "failures": failures(list(clean))}

    @r.post("/keys/claim")
    async def claim(request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        body = await read_body(ctx, request)
        wanted = _obj(body, "one_time_keys")
        clean: dict[str, dict[str, str]] = {}
        for user_id, devs in wanted.items():
            if not isinstance(devs, dict) or not all(isinstance(a, str) for a in devs.values()):
                raise bad_json("one_time_keys values must map device IDs to algorithms")
            clean[user_id] = devs
        return {"one_time_keys": await ctx.userapi.claim_keys(clean), "failures": failures(list(clean))}

    return r
