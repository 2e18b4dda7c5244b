"""Media over federation (spec v1.11 "authenticated media").

* Inbound `GET /_matrix/federation/v1/media/download/{mediaId}` (and `/thumbnail/`):
  our own media as `multipart/mixed` — a JSON metadata part (`{}`), then the bytes
  with their Content-Type/Content-Disposition. The X-Matrix signature is checked by
  the federationapi (`FederationAPI.verify_request`; the keyring is its).
* Outbound (`RemoteMediaFetcher`): `/_matrix/client/v1/media/download/{serverName}/...`
  for another server's media fetches it once with a signed federation request (falling
  back to the legacy unauthenticated `/_matrix/media/v3/download` for servers without
  the endpoint), writes it under `media.store_path` like local media and records it in
  `media`, so later requests (and thumbnails) are served from the cache.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any, Protocol
from urllib.parse import quote

from libs.errors import MatrixError

from .api import MediaInfo
from .files import FileStore
from .storage.store import MediaStore

log = logging.getLogger(__name__)

FEDERATION_DOWNLOAD = "/_matrix/federation/v1/media/download/{media_id}"
FEDERATION_THUMBNAIL = "/_matrix/federation/v1/media/thumbnail/{media_id}"


# Media IDs are opaque but path-safe (spec: [A-Za-z0-9_-]); server names as in the
# grammar (DNS name, IPv4 or [IPv6], optional port). Both become file paths here.
_MEDIA_ID = re.compile(r"[A-Za-z0-9_\-]{1,255}")
_SERVER_NAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}))*"
                          r"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def valid_remote_media(server_name: str, media_id: str) -> bool:
    return bool(_SERVER_NAME.fullmatch(server_name)) and len(server_name) <= 255 \
        and bool(_MEDIA_ID.fullmatch(media_id))


class MultipartError(ValueError):
    pass


@dataclass
class MediaPart:
    metadata: dict[str, Any]
    content_type: str | None
    content_disposition: str | None
    data: bytes | None          # None when the server redirected (`location`)
    location: str | None = None


def build_multipart(data: bytes, content_type: str, content_disposition: str,
                    boundary: str | None = None) -> tuple[bytes, str]:
    """(body, Content-Type header) of a federation media answer."""
    b = boundary or secrets.token_hex(16)
    head = (f"--{b}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
            f"--{b}\r\nContent-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n")
    return head.encode() + data + f"\r\n--{b}--\r\n".encode(), f"multipart/mixed; boundary={b}"


def _boundary(content_type: str) -> str:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        raise MultipartError(f"not multipart/mixed: {kind.strip()!r}")
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.strip().lower() == "boundary" and v.strip():
            return v.strip().strip('"')
    raise MultipartError("multipart answer without a boundary")


def parse_multipart(content_type: str, body: bytes) -> MediaPart:
    """The two parts of a federation media answer (metadata, then bytes or a Location)."""
    delim = b"--" + _boundary(content_type).encode()
    chunks = body.split(delim)
    # chunks[0]: preamble; then each part starts with CRLF; the last is "--" (+ epilogue).
    parts: list[tuple[Mapping[str, str], bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            if chunk.startswith(b"\r\n"):  # a part without headers
                head, payload = b"", chunk[2:]
            else:
                raise MultipartError("part without a header/body separator")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append((BytesHeaderParser().parsebytes(head + b"\r\n\r\n"), payload))
    if len(parts) < 2:
        raise MultipartError(f"expected 2 parts, got {len(parts)}")
    try:
        metadata = json.loads(parts[0][1] or b"{}")
    except ValueError:
        raise MultipartError("metadata part is not JSON") from None
    if not isinstance(metadata, dict):
        raise MultipartError("metadata part is not an object")
    headers, payload = parts[1]
    location = headers.get("Location")
    if location:
        return MediaPart(metadata, None, None, None, location)
    return MediaPart(metadata, headers.get("Content-Type"), headers.get("Content-Disposition"), payload)


def filename_from_disposition(value: str | None) -> str | None:
    """The filename of a Content-Disposition header (RFC 6266 `filename*` preferred)."""
    if not value:
        return None
    from email.message import Message

    m = Message()
    m["Content-Disposition"] = value
    name = m.get_filename()
    if not isinstance(name, str) or not name or "/" in name or "\x00" in name or len(name.encode()) > 255:
        return None
    return name


class RawFederationClient(Protocol):
    """The part of the federation client the fetcher uses (`FederationClient.request_raw`)."""

    async def request_raw(self, method: str, destination: str, path: str, *, query: Mapping[str, Any] | None = None,
                          content: Any | None = None, signed: bool = True, retries: int | None = None,
                          timeout_s: float | None = None, max_bytes: int | None = None,
                          accept: str = "application/json") -> Any: ...


def _status_of(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _errcode_of(exc: Exception) -> str | None:
    body = getattr(exc, "body", None)
    return body.get("errcode") if isinstance(body, dict) else None


class RemoteMediaFetcher:
    def __init__(self, server_name: str, client: RawFederationClient, store: MediaStore, files: FileStore,
                 max_bytes: int, timeout_s: float = 60.0) -> None:
        self.server_name = server_name
        self.client = client
        self.store = store
        self.files = files
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._inflight: dict[tuple[str, str], asyncio.Future[MediaInfo]] = {}

    async def get(self, server_name: str, media_id: str) -> MediaInfo:
        """The cached remote media, fetched first if needed (one fetch per media at a time)."""
        if not valid_remote_media(server_name, media_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown media")
        got = await self.store.get(server_name, media_id)
        if got is not None and got[1]:
            return got[0]
        key = (server_name, media_id)
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            info = await self._fetch(server_name, media_id)
            fut.set_result(info)
            return info
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._inflight.pop(key, None)

    async def _download(self, server_name: str, media_id: str) -> tuple[bytes, str | None, str | None]:
        path = FEDERATION_DOWNLOAD.format(media_id=quote(media_id, safe=""))
        try:
            resp = await self.client.request_raw("GET", server_name, path, timeout_s=self.timeout_s,
                                                 max_bytes=self.max_bytes + 64 * 1024, retries=1,
                                                 accept="multipart/mixed")
        except Exception as e:
            if _status_of(e) in (400, 404, 405) and _errcode_of(e) in (None, "M_UNRECOGNIZED"):
                return await self._download_legacy(server_name, media_id)
            raise
        try:
            part = parse_multipart(resp.headers.get("content-type", ""), resp.body)
        except MultipartError as e:
            raise MatrixError(502, "M_UNKNOWN", f"Bad media answer from {server_name}: {e}") from None
        if part.data is None:
            # Following a redirect means fetching an arbitrary URL: not without the
            # outbound address block-list, which only the federation client applies.
            raise MatrixError(502, "M_UNKNOWN", f"{server_name} redirected the media download")
        return part.data, part.content_type, filename_from_disposition(part.content_disposition)

    async def _download_legacy(self, server_name: str, media_id: str) -> tuple[bytes, str | None, str | None]:
        path = f"/_matrix/media/v3/download/{quote(server_name, safe='')}/{quote(media_id, safe='')}"
        resp = await self.client.request_raw("GET", server_name, path, query={"allow_remote": "false"},
                                             signed=False, timeout_s=self.timeout_s, retries=1,
                                             max_bytes=self.max_bytes, accept="*/*")
        return (resp.body, resp.headers.get("content-type"),
                filename_from_disposition(resp.headers.get("content-disposition")))

    async def _fetch(self, server_name: str, media_id: str) -> MediaInfo:
        try:
            data, content_type, filename = await self._download(server_name, media_id)
        except MatrixError:
            raise
        except Exception as e:
            status = _status_of(e)
            if status == 404:
                raise MatrixError(404, "M_NOT_FOUND", "Remote media not found") from None
            if status is not None and 400 <= status < 500:
                raise MatrixError(502, "M_UNKNOWN", f"{server_name} refused the media download ({status})") from None
            log.info("remote media %s/%s: %s", server_name, media_id, e)
            raise MatrixError(502, "M_UNKNOWN", f"Could not fetch media from {server_name}") from None
        if len(data) > self.max_bytes:
            raise MatrixError(502, "M_TOO_LARGE", "Remote media is larger than this server accepts")
        ctype = content_type or "application/octet-stream"
        digest = await self.files.write(self.files.path(server_name, media_id), data)
        now = int(time.time() * 1000)
        await self.store.record_remote(server_name, media_id, ctype, filename, len(data), digest, now)
        return MediaInfo(server_name, media_id, ctype, filename, len(data), None, now)
