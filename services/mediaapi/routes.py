"""Media routes: the legacy `/_matrix/media/v3` paths and the authenticated
`/_matrix/client/v1/media` paths (spec v1.11), over one implementation."""
from __future__ import annotations

import asyncio
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Depends, Request, Response

from libs.errors import MatrixError
from libs.http.body import read_body_limited
from services.userapi.api import Device

from .federation import RemoteMediaFetcher, build_multipart
from .files import THUMBNAILABLE, FileStore, make_thumbnail
from .storage.store import MediaStore

# Types a browser may render inline without risk (spec: Content-Disposition for media).
INLINE_TYPES = {
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
    "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
}
CSP = ("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
       "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")
MAX_PENDING_UPLOADS = 50
UNUSED_EXPIRY_MS = 24 * 3600 * 1000

@dataclass
class MediaRoutesDeps:
    server_name: str
    store: MediaStore
    files: FileStore
    max_upload_bytes: int
    auth: Callable[..., Awaitable[Device]]
    # Remote media (None: federation off, remote media is unknown here).
    remote: RemoteMediaFetcher | None = None
    # (method, uri, Authorization headers) -> origin: the federationapi's X-Matrix check
    # for the inbound federation media routes (None: they answer 404).
    federation_verify: Callable[[str, str, list[str]], Awaitable[str]] | None = None


def _request_uri(request: Request) -> str:
    """Path and query exactly as sent (the origin signed the raw form)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    uri = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    qs = request.scope.get("query_string") or b""
    return uri + ("?" + qs.decode("latin-1") if qs else "")

def _err(status: int, errcode: str, msg: str) -> MatrixError:
    return MatrixError(status, errcode, msg)

def _new_media_id() -> str:
    return secrets.token_urlsafe(18)

def _content_disposition(content_type: str | None, filename: str | None) -> str:
    base = (content_type or "").split(";")[0].strip().lower()
    kind = "inline" if base in INLINE_TYPES else "attachment"
    if not filename:
        return kind
    if filename.isascii() and all(c.isprintable() and c not in '"\\' for c in filename):
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{urllib.parse.quote(filename, safe='')}"

def _media_headers(content_type: str | None, filename: str | None) -> dict[str, str]:
    return {
        "Content-Disposition": _content_disposition(content_type, filename),
        "Content-Security-Policy": CSP,
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }

def build_media_routers(deps: MediaRoutesDeps) -> tuple[APIRouter, APIRouter, APIRouter]:
    """(legacy router for /_matrix/media/{v1,v3}, authenticated router for /_matrix/client/v1/media,
    federation router for /_matrix/federation/v1/media)."""
    legacy = APIRouter()
    authed = APIRouter()
    federation = APIRouter()
    store, files = deps.store, deps.files

    async def read_body(request: Request) -> bytes:
        return await read_body_limited(request, deps.max_upload_bytes)

    async def store_content(media_id: str, request: Request, filename: str | None) -> None:
        data = await read_body(request)
        content_type = request.headers.get("content-type") or "application/octet-stream"
        if filename is not None and (len(filename.encode()) > 255 or "/" in filename or "\x00" in filename):
            raise _err(400, "M_INVALID_PARAM", "Invalid filename")
        digest = await files.write(files.path(deps.server_name, media_id), data)
        if not await store.finish_upload(deps.server_name, media_id, content_type, filename, len(data), digest,
                                         int(time.time() * 1000)):
            raise _err(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")

    async def upload(request: Request, filename: str | None = None,
                     device: Device = Depends(deps.auth)) -> dict[str, Any]:
        media_id = _new_media_id()
        await store.create(deps.server_name, media_id, device.user_id, int(time.time() * 1000))
        await store_content(media_id, request, filename)
        return {"content_uri": f"mxc://{deps.server_name}/{media_id}"}

    async def create(device: Device = Depends(deps.auth)) -> dict[str, Any]:
        if await store.count_pending(device.user_id) >= MAX_PENDING_UPLOADS:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many pending uploads", retry_after_ms=60_000)
        media_id = _new_media_id()
        now = int(time.time() * 1000)
        await store.create(deps.server_name, media_id, device.user_id, now)
        return {"content_uri": f"mxc://{deps.server_name}/{media_id}", "unused_expires_at": now + UNUSED_EXPIRY_MS}

    async def upload_to(server_name: str, media_id: str, request: Request, filename: str | None = None,
                        device: Device = Depends(deps.auth)) -> dict[str, Any]:
        if server_name != deps.server_name:
            raise _err(404, "M_NOT_FOUND", "Unknown media")
        got = await store.get(server_name, media_id)
        if got is None:
            raise _err(404, "M_NOT_FOUND", "Unknown media")
        info, uploaded = got
        if info.uploader != device.user_id:
            raise _err(403, "M_FORBIDDEN", "Not your media")
        if uploaded:
            raise _err(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        await store_content(media_id, request, filename)
        return {}

    async def load(server_name: str, media_id: str):
        if server_name != deps.server_name:
            if deps.remote is None:
                raise _err(404, "M_NOT_FOUND", "Remote media is not available")
            return await deps.remote.get(server_name, media_id)
        got = await store.get(server_name, media_id)
        if got is None:
            raise _err(404, "M_NOT_FOUND", "Unknown media")
        info, uploaded = got
        if not uploaded:
            raise _err(504, "M_NOT_YET_UPLOADED", "Media has not been uploaded yet")
        return info

    async def download(server_name: str, media_id: str, file_name: str | None = None) -> Response:
        info = await load(server_name, media_id)
        data = await files.read(files.path(server_name, media_id))
        if data is None:
            raise _err(404, "M_NOT_FOUND", "Media content missing")
        return Response(content=data, media_type=info.content_type or "application/octet-stream",
                        headers=_media_headers(info.content_type, file_name or info.upload_name))

    async def thumbnail(server_name: str, media_id: str, width: int, height: int,
                        method: str = "scale", animated: bool | None = None) -> Response:
        if width <= 0 or height <= 0 or width > 4096 or height > 4096:
            raise _err(400, "M_INVALID_PARAM", "width and height must be between 1 and 4096")
        if method not in ("scale", "crop"):
            raise _err(400, "M_INVALID_PARAM", "method must be 'scale' or 'crop'")
        info = await load(server_name, media_id)
        ctype = (info.content_type or "").split(";")[0].strip().lower()
        if ctype not in THUMBNAILABLE:
            raise _err(400, "M_UNKNOWN", "Cannot thumbnail this media type")
        cached = await store.get_thumbnail(server_name, media_id, width, height, method)
        path = files.thumbnail_path(server_name, media_id, width, height, method)
        if cached is not None:
            data = await files.read(path)
            if data is not None:
                return Response(content=data, media_type=cached[0], headers=_media_headers(cached[0], None))
        original = await files.read(files.path(server_name, media_id))
        if original is None:
            raise _err(404, "M_NOT_FOUND", "Media content missing")

        made = await asyncio.to_thread(make_thumbnail, original, width, height, method)
        if made is None:
            raise _err(400, "M_UNKNOWN", "Cannot thumbnail this media")
        data, out_type = made
        await files.write(path, data)
        await store.add_thumbnail(server_name, media_id, width, height, method, out_type, len(data))
        return Response(content=data, media_type=out_type, headers=_media_headers(out_type, None))

    async def config() -> dict[str, Any]:
        return {"m.upload.size": deps.max_upload_bytes}

    async def preview_url() -> dict[str, Any]:
        # URL previews need outbound HTTP with the address block-list; not served yet.
        raise _err(404, "M_UNRECOGNIZED", "URL previews are not enabled on this server")

    # Legacy, unauthenticated paths (still used by older clients and for uploads).
    for prefix in ("/_matrix/media/v3", "/_matrix/media/r0", "/_matrix/media/v1"):
        legacy.add_api_route(f"{prefix}/upload", upload, methods=["POST"])
        legacy.add_api_route(f"{prefix}/upload/{{server_name}}/{{media_id}}", upload_to, methods=["PUT"])
        legacy.add_api_route(f"{prefix}/download/{{server_name}}/{{media_id}}", download, methods=["GET"])
        legacy.add_api_route(f"{prefix}/download/{{server_name}}/{{media_id}}/{{file_name}}", download, methods=["GET"])
        legacy.add_api_route(f"{prefix}/thumbnail/{{server_name}}/{{media_id}}", thumbnail, methods=["GET"])
        legacy.add_api_route(f"{prefix}/config", config, methods=["GET"], dependencies=[Depends(deps.auth)])
        legacy.add_api_route(f"{prefix}/preview_url", preview_url, methods=["GET"], dependencies=[Depends(deps.auth)])
    legacy.add_api_route("/_matrix/media/v1/create", create, methods=["POST"])

    # Authenticated media (spec v1.11): same handlers behind the access token.
    p = "/_matrix/client/v1/media"
    dep = [Depends(deps.auth)]
    authed.add_api_route(f"{p}/download/{{server_name}}/{{media_id}}", download, methods=["GET"], dependencies=dep)
    authed.add_api_route(f"{p}/download/{{server_name}}/{{media_id}}/{{file_name}}", download, methods=["GET"], dependencies=dep)
    authed.add_api_route(f"{p}/thumbnail/{{server_name}}/{{media_id}}", thumbnail, methods=["GET"], dependencies=dep)
    authed.add_api_route(f"{p}/config", config, methods=["GET"], dependencies=dep)
    authed.add_api_route(f"{p}/preview_url", preview_url, methods=["GET"], dependencies=dep)

    # Federation (spec v1.11): our own media to other servers, as multipart/mixed.
    async def federation_origin(request: Request) -> str:
        if deps.federation_verify is None:
            raise _err(404, "M_UNRECOGNIZED", "Federation is not enabled on this server")
        return await deps.federation_verify(request.method, _request_uri(request),
                                            request.headers.getlist("authorization"))

    def multipart(resp: Response) -> Response:
        body, ctype = build_multipart(bytes(resp.body), resp.media_type or "application/octet-stream",
                                      resp.headers.get("content-disposition", "attachment"))
        return Response(content=body, media_type=ctype)

    async def federation_download(media_id: str, origin: str = Depends(federation_origin)) -> Response:
        return multipart(await download(deps.server_name, media_id))

    async def federation_thumbnail(media_id: str, width: int, height: int, method: str = "scale",
                                   animated: bool | None = None,
                                   origin: str = Depends(federation_origin)) -> Response:
        return multipart(await thumbnail(deps.server_name, media_id, width, height, method, animated))

    f = "/_matrix/federation/v1/media"
    federation.add_api_route(f"{f}/download/{{media_id}}", federation_download, methods=["GET"])
    federation.add_api_route(f"{f}/thumbnail/{{media_id}}", federation_thumbnail, methods=["GET"])
    return legacy, authed, federation
