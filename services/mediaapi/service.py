"""The mediaapi service: media metadata in its own database, bytes on (shared) disk."""
from __future__ import annotations

from typing import Awaitable, Callable

from fastapi import APIRouter

from libs.config.model import HomeserverConfig
from libs.storage import Database

from .api import MediaInfo
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

    def __init__(self, config: HomeserverConfig, db: Database, auth: Callable[..., Awaitable]) -> None:
        self.config = config
        self.db = db
        self.store = MediaStore(db)
        self.files = FileStore(config.media.store_path)
        self.api = MediaInternal(self.store)
        legacy, authed = build_media_routers(MediaRoutesDeps(
            server_name=config.server_name, store=self.store, files=self.files,
            max_upload_bytes=config.media.max_upload_bytes, auth=auth,
        ))
        # Both routers carry full paths (media spans two URL trees).
        self.routers: list[APIRouter] = [legacy, authed]
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
        pass
