"""The clientapi service: `/_matrix/client/*` routes other than those of the syncapi
and mediaapi. Stateless: it talks to the roomserver and userapi through their
APIs and produces ephemeral records (typing, receipts, to-device) on the log."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import APIRouter

from libs.config.model import HomeserverConfig
from libs.log.api import EventLog
from libs.ratelimit import RateLimiter
from services.roomserver.api import RoomserverAPI
from services.userapi.api import UserAPI

from .routes_rooms import RoomRoutesDeps, build_room_router
from .routes_upgrade import build_upgrade_router

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class ClientService:
    name = "clientapi"

    def __init__(self, config: HomeserverConfig, log: EventLog, *, roomserver: RoomserverAPI,
                 userapi: UserAPI, auth: Callable[..., Awaitable[Any]],
                 extra_client_routers: list[APIRouter] | None = None,
                 wait_projected: Callable[[str], Awaitable[Any]] | None = None,
                 ratelimiter: RateLimiter | None = None,
                 guest_auth: Callable[..., Awaitable[Any]] | None = None,
                 appservices: Any = None, alias_query: Callable[[str], Awaitable[bool]] | None = None,
                 user_query: Callable[[str], Awaitable[bool]] | None = None,
                 network_rooms: Callable[[str | None], Awaitable[list[str]]] | None = None,
                 federation: Any = None) -> None:
        self.config = config
        deps = RoomRoutesDeps(
            server_name=config.server_name, roomserver=roomserver, userapi=userapi,
            producer=log.producer(), auth=auth, guest_auth=guest_auth, wait_projected=wait_projected,
            ratelimiter=ratelimiter or RateLimiter(config.rate_limiting),
            appservices=appservices, alias_query=alias_query, user_query=user_query, network_rooms=network_rooms,
            federation=federation, default_room_version=config.client.default_room_version,
        )
        # Kept so a composition can connect services built after this one (the federationapi).
        self.deps = deps
        rooms = build_room_router(deps)
        upgrade = build_upgrade_router(deps)
        self.routers: list[APIRouter] = []
        for prefix in CLIENT_PREFIXES:
            r = APIRouter(prefix=prefix)
            r.include_router(rooms)
            r.include_router(upgrade)
            self.routers.append(r)
        self.routers.extend(extra_client_routers or [])
        self.readiness_checks: list[Callable[[], Awaitable[bool]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
