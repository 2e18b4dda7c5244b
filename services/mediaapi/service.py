"""The mediaapi service: media metadata in its own database, bytes on (shared) disk."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import APIRouter

from libs.config.model import HomeserverConfig
from libs.storage import Database

from .api import MediaInfo
from .federation import RawFederationClient, RemoteMediaFetcher
from .files import FileStore
from .routes import MediaRoutesDeps, build_media_routers
from .storage.store import MediaStore

MIGRATIONS = "services.mediaapi.storage.migrations"


class MediaInternal:
    def __init__(self, store: MediaStore) -> None:
        self.store = store

    async def get_media_info(self, server_name: str, media_id: str) -> MediaInfo | None:
        got = await self.store.get(server_name, media_id)
        return got[0] if got else None


class MediaService:
    name = "mediaapi"

    def __init__(self, config: HomeserverConfig, db: Database, auth: Callable[..., Awaitable], *,
                 federation_client: RawFederationClient | None = None,
                 federation_verify: Callable[[str, str, list[str]], Awaitable[str]] | None = None) -> None:
        """`federation_client` (signed requests; with `federation.enabled`): remote media is
        fetched and cached. `federation_verify`: the federationapi's X-Matrix check, for the
        inbound federation media routes (may be set later on `self.deps`)."""
        self.config = config
        self.db = db
        self.store = MediaStore(db)
        self.files = FileStore(config.media.store_path)
        self.api = MediaInternal(self.store)
        self.federation_client: Any = federation_client
        remote = (RemoteMediaFetcher(config.server_name, federation_client, self.store, self.files,
                                     config.media.max_upload_bytes)
                  if federation_client is not None else None)
        self.deps = MediaRoutesDeps(
            server_name=config.server_name, store=self.store, files=self.files,
            max_upload_bytes=config.media.max_upload_bytes, auth=auth, remote=remote,
            federation_verify=federation_verify,
        )
        legacy, authed, federation = build_media_routers(self.deps)
        # The routers carry full paths (media spans three URL trees).
        self.routers: list[APIRouter] = [legacy, authed, federation]
        self.readiness_checks: list[Callable[[], Awaitable[bool]]] = [self._db_ready]

    async def _db_ready(self) -> bool:
        try:
            await self.db.ping()
            return True
        except Exception:  # noqa: BLE001 - readiness reports, never raises
            return False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        aclose = getattr(self.federation_client, "aclose", None)
        if aclose is not None:
            await aclose()
