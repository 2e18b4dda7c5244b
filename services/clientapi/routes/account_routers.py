"""Assemble the non-room client routes, under /_matrix/client/v3 and the r0 alias."""
from __future__ import annotations

from fastapi import APIRouter

from services.clientapi.routes import (
    account,
    account_data,
    admin,
    capabilities,
    devices,
    filter,
    keys,
    login,
    openid,
    presence,
    profile,
    pushers,
    pushrules,
    register,
    room_keys,
    tags,
    versions,
)
from services.clientapi.routes.common import CLIENT_PREFIXES, AccountRoutesContext

_PREFIXED_MODULES = (login, register, account, devices, profile, presence, keys, account_data, filter, pushrules,
                     pushers, tags, room_keys, openid, admin, capabilities)


def build_account_routers(ctx: AccountRoutesContext) -> list[APIRouter]:
    """Routers for versions, well-known, login, register, account, devices, profile,
    account data, filters, push rules and capabilities."""
    # Routers are built directly with their prefix: every include_router copies
    # (and re-analyses) routes, which is what makes app startup slow.
    return [versions.router(ctx), openid.userinfo_router(ctx)] + [
        module.router(ctx, prefix) for prefix in CLIENT_PREFIXES for module in _PREFIXED_MODULES
    ]
