"""/pushrules/ tree: GET all; GET/PUT/DELETE a rule; GET/PUT enabled and actions."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError, bad_json, not_found
from services.clientapi.routes.common import AccountRoutesContext, read_body
from services.userapi.api import Device
from services.userapi.pushrules import KINDS


def _scope(scope: str) -> None:
    if scope != "global":
        raise MatrixError(400, "M_INVALID_PARAM", "Only the 'global' scope is supported")


def _kind(kind: str) -> None:
    if kind not in KINDS:
        raise MatrixError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind!r}")


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    member = ctx.auth.require()

    @r.get("/pushrules/")
    @r.get("/pushrules")
    async def all_rules(device: Device = Depends(member)) -> dict[str, Any]:
        return await ctx.userapi.get_push_rules(device.user_id)

    @r.get("/pushrules/{scope}/")
    async def scope_rules(scope: str, device: Device = Depends(member)) -> dict[str, Any]:
        _scope(scope)
        rules: dict[str, Any] = (await ctx.userapi.get_push_rules(device.user_id))["global"]
        return rules

    @r.get("/pushrules/{scope}/{kind}/")
    async def kind_rules(scope: str, kind: str, device: Device = Depends(member)) -> list[dict[str, Any]]:
        _scope(scope)
        _kind(kind)
        rules: list[dict[str, Any]] = (await ctx.userapi.get_push_rules(device.user_id))["global"][kind]
        return rules

    async def one(device: Device, scope: str, kind: str, rule_id: str) -> dict[str, Any]:
        _scope(scope)
        _kind(kind)
        rule = await ctx.userapi.get_push_rule(device.user_id, kind, rule_id)
        if rule is None:
            raise not_found("Unknown push rule")
        return rule

    @r.get("/pushrules/{scope}/{kind}/{rule_id}")
    async def get_rule(scope: str, kind: str, rule_id: str, device: Device = Depends(member)) -> dict[str, Any]:
        return await one(device, scope, kind, rule_id)

    @r.put("/pushrules/{scope}/{kind}/{rule_id}")
    async def put_rule(
        scope: str, kind: str, rule_id: str, request: Request,
        before: str | None = None, after: str | None = None, device: Device = Depends(member),
    ) -> dict[str, Any]:
        _scope(scope)
        _kind(kind)
        body = await read_body(ctx, request)
        await ctx.userapi.put_push_rule(device.user_id, kind, rule_id, body, before, after)
        return {}

    @r.delete("/pushrules/{scope}/{kind}/{rule_id}")
    async def delete_rule(scope: str, kind: str, rule_id: str, device: Device = Depends(member)) -> dict[str, Any]:
        _scope(scope)
        _kind(kind)
        await ctx.userapi.delete_push_rule(device.user_id, kind, rule_id)
        return {}

    @r.get("/pushrules/{scope}/{kind}/{rule_id}/enabled")
    async def get_enabled(scope: str, kind: str, rule_id: str, device: Device = Depends(member)) -> dict[str, Any]:
        return {"enabled": (await one(device, scope, kind, rule_id))["enabled"]}

    @r.put("/pushrules/{scope}/{kind}/{rule_id}/enabled")
    async def put_enabled(
        scope: str, kind: str, rule_id: str, request: Request, device: Device = Depends(member)
    ) -> dict[str, Any]:
        _scope(scope)
        _kind(kind)
        body = await read_body(ctx, request)
        enabled = body.get("enabled")
        if not isinstance(enabled, bool):
            raise bad_json("enabled must be a boolean")
        await ctx.userapi.set_push_rule_enabled(device.user_id, kind, rule_id, enabled)
        return {}

    @r.get("/pushrules/{scope}/{kind}/{rule_id}/actions")
    async def get_actions(scope: str, kind: str, rule_id: str, device: Device = Depends(member)) -> dict[str, Any]:
        return {"actions": (await one(device, scope, kind, rule_id))["actions"]}

    @r.put("/pushrules/{scope}/{kind}/{rule_id}/actions")
    async def put_actions(
        scope: str, kind: str, rule_id: str, request: Request, device: Device = Depends(member)
    ) -> dict[str, Any]:
        _scope(scope)
        _kind(kind)
        body = await read_body(ctx, request)
        actions = body.get("actions")
        if not isinstance(actions, list):
            raise bad_json("actions must be a list")
        await ctx.userapi.set_push_rule_actions(device.user_id, kind, rule_id, actions)
        return {}

    # Anything else under /pushrules/ (no scope, no kind, an empty or slashed rule ID,
    # an unknown attribute, a scope or kind without its trailing slash) is a bad
    # request, not an unknown endpoint nor a redirect.
    @r.api_route("/pushrules/{rest:path}", methods=["GET", "PUT", "DELETE"])
    async def malformed(rest: str, device: Device = Depends(member)) -> dict[str, Any]:
        raise MatrixError(400, "M_UNRECOGNIZED", "Malformed push rule path")

    return r
