"""Access-token authentication for client routes (a FastAPI dependency).

    auth = ClientAuth(userapi, config)
    @router.get("/account/whoami")
    async def whoami(device: Device = Depends(auth.require(allow_guest=True))): ...

The token comes from `Authorization: Bearer <token>` only; the deprecated
`?access_token=` query parameter is accepted when `client.allow_query_access_token`
is set. Missing token: 401 M_MISSING_TOKEN; unknown: 401 M_UNKNOWN_TOKEN with
`soft_logout: false`; a guest on a route that does not allow guests: 403
M_GUEST_ACCESS_FORBIDDEN. Successful lookups are cached for a few seconds (keyed by
the token's hash); `invalidate_user` drops a user's entries (wired to the userapi's
token_revoked_hooks in this process).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from fastapi import Request

from libs.config.model import HomeserverConfig
from services.appservice.api import AppService, AppServiceRegistry
from services.userapi.api import Device, UserAPI
from libs.errors import MatrixError

DeviceDependency = Callable[[Request], Awaitable[Device]]


def extract_access_token(request: Request, allow_query: bool) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    if allow_query:
        token = request.query_params.get("access_token")
        if token:
            return token
    return None


class ClientAuth:
    def __init__(
        self, userapi: UserAPI, config: HomeserverConfig, cache_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic, max_cache_entries: int = 50_000,
    ) -> None:
        self._userapi = userapi
        self._config = config
        self._ttl = cache_ttl_s
        self._clock = clock
        self._max = max_cache_entries
        self._cache: dict[str, tuple[Device, float]] = {}
        # Application services (their as_token authenticates them; set by the wiring).
        self.appservices: AppServiceRegistry | None = None

    def invalidate_user(self, user_id: str) -> None:
        for key in [k for k, (d, _) in self._cache.items() if d.user_id == user_id]:
            self._cache.pop(key, None)

    def invalidate_all(self) -> None:
        self._cache.clear()

    async def authenticate(self, request: Request) -> Device:
        token = extract_access_token(request, self._config.client.allow_query_access_token)
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        svc = self.appservices.by_token(token) if self.appservices is not None else None
        if svc is not None:
            return await self._appservice_device(request, svc)
        key = hashlib.sha256(token.encode("utf-8")).hexdigest()
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            device = hit[0]
        else:
            found = await self._userapi.query_access_token(token)
            if found is None:
                self._cache.pop(key, None)
                raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token", soft_logout=False)
            device = found
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[key] = (device, now + self._ttl)
            ip = request.client.host if request.client else None
            await self._userapi.touch_device(device.user_id, device.device_id, ip)
        return device

    def appservice_for(self, request: Request) -> AppService | None:
        """The application service whose as_token authenticates `request`, if any."""
        token = extract_access_token(request, self._config.client.allow_query_access_token)
        if token is None or self.appservices is None:
            return None
        return self.appservices.by_token(token)

    async def _appservice_device(self, request: Request, svc: AppService) -> Device:
        # An AS acts as its sender, or as any registered user of its namespace (`?user_id=`).
        user_id = request.query_params.get("user_id") or svc.sender
        if user_id != svc.sender:
            if not svc.is_interested_in_user(user_id):
                raise MatrixError(403, "M_EXCLUSIVE", "Application service cannot masquerade as this user")
            account = await self._userapi.get_account(user_id)
            if account is None or account.deactivated:
                raise MatrixError(403, "M_FORBIDDEN", "Application service has not registered this user")
        return Device(user_id=user_id, device_id=request.query_params.get("device_id") or f"AS_{svc.id}")

    def require(self, allow_guest: bool = False) -> DeviceDependency:
        """A FastAPI dependency returning the requester's Device."""

        async def dependency(request: Request) -> Device:
            device = await self.authenticate(request)
            if device.is_guest and not allow_guest:
                raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
            return device

        return dependency
