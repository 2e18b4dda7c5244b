"""GET /_matrix/client/versions and /.well-known/matrix/client (no auth)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.clientapi.routes.common import AccountRoutesContext

SUPPORTED_VERSIONS = [
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
    *(f"v1.{n}" for n in range(1, 13)),
]


def router(ctx: AccountRoutesContext) -> APIRouter:
    r = APIRouter()

    @r.get("/_matrix/client/versions")
    async def versions() -> dict[str, Any]:
        return {"versions": SUPPORTED_VERSIONS, "unstable_features": {}}

    @r.get("/.well-known/matrix/client")
    async def well_known() -> dict[str, Any]:
        return {"m.homeserver": {"base_url": ctx.config.public_baseurl}}

    return r
