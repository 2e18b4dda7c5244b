"""/keys/upload, /keys/query, /keys/claim (/keys/changes is the syncapi's): a small local E2E key store.
Remote users are asked of their servers (/user/keys/query|claim, one request per server, at
once) when the federationapi is wired in (`ctx.remote_keys`); a server that fails is named
under `failures`."""
from __future__ import annotations

import asyncio
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


REMOTE_TIMEOUT_S = 10.0


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    anyone = ctx.auth.require(allow_guest=True)
    server_name = ctx.config.server_name

    async def ask_remote(kind: str, field: str, wanted: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(merged `field` of the remote answers, failures by server) for the remote users."""
        by_server: dict[str, dict[str, Any]] = {}
        for user_id, v in wanted.items():
            server = user_id.partition(":")[2]
            if server and server != server_name:
                by_server.setdefault(server, {})[user_id] = v
        if not by_server:
            return {}, {}
        if ctx.remote_keys is None:
            return {}, {s: {"status": 503, "message": "Federation is not available"} for s in sorted(by_server)}
        remote_keys = ctx.remote_keys

        async def one(server: str, users: dict[str, Any]) -> Any:
            try:
                return await asyncio.wait_for(remote_keys(server, kind, {field: users}), REMOTE_TIMEOUT_S)
            except Exception as e:  # unreachable, refused, timed out: named in failures
                return e

        answers = await asyncio.gather(*(one(s, u) for s, u in by_server.items()))
        merged: dict[str, Any] = {}
        failed: dict[str, Any] = {}
        for (server, users), ans in zip(by_server.items(), answers):
            got = ans.get(field) if isinstance(ans, dict) else None
            if not isinstance(got, dict):
                failed[server] = {"status": 503, "message": f"{server} did not answer: {ans}"[:200]}
                continue
            for user_id, v in got.items():
                if user_id in users and isinstance(v, dict):
                    merged[user_id] = v
        return merged, failed

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
        local = {u: d for u, d in clean.items() if u.partition(":")[2] == server_name}
        remote, failed = await ask_remote("query", "device_keys",
                                          {u: d for u, d in clean.items() if u not in local})
        return {"device_keys": {**(await ctx.userapi.query_keys(local) if local else {}), **remote},
                "failures": failed}

    @r.post("/keys/claim")
    async def claim(request: Request, device: Device = Depends(anyone)) -> dict[str, Any]:
        body = await read_body(ctx, request)
        wanted = _obj(body, "one_time_keys")
        clean: dict[str, dict[str, str]] = {}
        for user_id, devs in wanted.items():
            if not isinstance(devs, dict) or not all(isinstance(a, str) for a in devs.values()):
                raise bad_json("one_time_keys values must map device IDs to algorithms")
            clean[user_id] = devs
        local = {u: d for u, d in clean.items() if u.partition(":")[2] == server_name}
        remote, failed = await ask_remote("claim", "one_time_keys",
                                          {u: d for u, d in clean.items() if u not in local})
        return {"one_time_keys": {**(await ctx.userapi.claim_keys(local) if local else {}), **remote},
                "failures": failed}

    return r
