"""SQL of the mediaapi (written once for PostgreSQL and SQLite)."""
from __future__ import annotations

from libs.storage import Database, UniqueViolation

from ..api import MediaInfo


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, server_name: str, media_id: str, uploader: str, now_ms: int) -> bool:
        try:
            await self.db.execute(
                "INSERT INTO media (server_name, media_id, uploader, created_ts) VALUES ($1, $2, $3, $4)",
                server_name, media_id, uploader, now_ms,
            )
        except UniqueViolation:
            return False
        return True

    async def finish_upload(self, server_name: str, media_id: str, content_type: str | None,
                            upload_name: str | None, size: int, sha256: str, now_ms: int) -> bool:
        """Record the content of a created media; False if it already had content."""
        row = await self.db.fetchrow(
            "UPDATE media SET content_type = $3, upload_name = $4, size_bytes = $5, sha256 = $6, uploaded_ts = $7"
            " WHERE server_name = $1 AND media_id = $2 AND uploaded_ts IS NULL RETURNING media_id",
            server_name, media_id, content_type, upload_name, size, sha256, now_ms,
        )
        return row is not None

    async def record_remote(self, server_name: str, media_id: str, content_type: str | None,
                            upload_name: str | None, size: int, sha256: str, now_ms: int) -> None:
        """A remote server's media, fetched and written to disk (a racing replica's row wins)."""
        try:
            await self.db.execute(
                "INSERT INTO media (server_name, media_id, content_type, upload_name, size_bytes, sha256,"
                " created_ts, uploaded_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                server_name, media_id, content_type, upload_name, size, sha256, now_ms,
            )
        except UniqueViolation:
            pass

    async def get(self, server_name: str, media_id: str) -> tuple[MediaInfo, bool] | None:
        """The media and whether its content has been uploaded."""
        row = await self.db.fetchrow(
            "SELECT server_name, media_id, content_type, upload_name, size_bytes, uploader, created_ts, uploaded_ts"
            " FROM media WHERE server_name = $1 AND media_id = $2",
            server_name, media_id,
        )
        if row is None:
            return None
        info = MediaInfo(row["server_name"], row["media_id"], row["content_type"], row["upload_name"],
                         row["size_bytes"], row["uploader"], row["created_ts"])
        return info, row["uploaded_ts"] is not None

    async def count_pending(self, uploader: str) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM media WHERE uploader = $1 AND uploaded_ts IS NULL", uploader))

    async def get_thumbnail(self, server_name: str, media_id: str, width: int, height: int,
                            method: str) -> tuple[str, int] | None:
        row = await self.db.fetchrow(
            "SELECT content_type, size_bytes FROM thumbnails WHERE server_name = $1 AND media_id = $2"
            " AND width = $3 AND height = $4 AND method = $5",
            server_name, media_id, width, height, method,
        )
        return (row["content_type"], row["size_bytes"]) if row else None

    async def add_thumbnail(self, server_name: str, media_id: str, width: int, height: int, method: str,
                            content_type: str, size: int) -> None:
        await self.db.execute(
            "INSERT INTO thumbnails (server_name, media_id, width, height, method, content_type, size_bytes)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            server_name, media_id, width, height, method, content_type, size,
        )
