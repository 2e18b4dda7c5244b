"""The mediaapi's public interface.

The mediaapi owns media metadata (its tables) and the files under
`media.store_path` (shared storage in the cluster, so replicas are stateless).
It serves `/_matrix/media/*` and `/_matrix/client/v1/media/*`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class MediaInfo:
    server_name: str
    media_id: str
    content_type: str | None
    upload_name: str | None
    size_bytes: int | None
    uploader: str | None
    created_ts: int


class MediaAPI(Protocol):
    async def get_media_info(self, server_name: str, media_id: str) -> MediaInfo | None: ...
