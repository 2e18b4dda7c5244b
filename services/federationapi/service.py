"""The federationapi service (keys and version only, for now)."""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Sequence

from fastapi import APIRouter

from libs.events.server_keys import build_server_keys
from libs.events.signing import SigningKey

# Responses say how long remote servers may cache our keys; re-signed on each request.
KEY_RESPONSE_VALIDITY_MS = 24 * 3600 * 1000


class FederationInternal:
    def __init__(self, server_name: str, signing_keys: Sequence[SigningKey], validity_ms: int) -> None:
        self.server_name = server_name
        self.signing_keys = list(signing_keys)
        self.validity_ms = validity_ms

    async def server_keys(self) -> dict[str, Any]:
        valid_until = int(time.time() * 1000) + self.validity_ms
        return build_server_keys(self.server_name, self.signing_keys, valid_until)


class FederationService:
    name = "federationapi"

    def __init__(self, server_name: str, signing_keys: Sequence[SigningKey], version: str,
                 validity_ms: int = KEY_RESPONSE_VALIDITY_MS) -> None:
        self.api = FederationInternal(server_name, signing_keys, min(validity_ms, KEY_RESPONSE_VALIDITY_MS * 7))
        router = APIRouter()

        @router.get("/_matrix/key/v2/server")
        async def server_keys() -> dict[str, Any]:
            return await self.api.server_keys()

        # Deprecated form with a key ID; the whole key set is returned either way.
        @router.get("/_matrix/key/v2/server/{key_id}")
        async def server_keys_by_id(key_id: str) -> dict[str, Any]:
            return await self.api.server_keys()

        @router.get("/_matrix/federation/v1/version")
        async def fed_version() -> dict[str, Any]:
            return {"server": {"name": "Axon", "version": version}}

        self.routers: list[APIRouter] = [router]
        self.readiness_checks: list[Callable[[], Awaitable[bool]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
