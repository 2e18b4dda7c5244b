"""Strict JSON request bodies with a size limit.

    @router.put("/rooms/{room_id}/send/{type}/{txn}")
    async def send(request: Request) -> dict:
        content = await read_json_body(request, max_bytes=65536)

Size over the limit -> 413 M_TOO_LARGE (checked on Content-Length first, then
while streaming, so a lying or chunked client cannot make us buffer more);
invalid UTF-8 / not JSON -> 400 M_NOT_JSON; duplicate keys, NaN, out-of-range
integers, lone surrogates, too deep -> 400 M_BAD_JSON; not an object -> M_BAD_JSON.
Parsing uses libs.events.canonical_json.parse_canonical_json.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request

from libs.errors import MatrixError, bad_json, not_json, too_large
from libs.events.canonical_json import CanonicalJSONError, NotJSONError, parse_canonical_json

DEFAULT_MAX_BODY = 1024 * 1024


async def read_body_limited(request: Request, max_bytes: int = DEFAULT_MAX_BODY) -> bytes:
    """The raw body, or M_TOO_LARGE past `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise too_large(f"Request body exceeds {max_bytes} bytes")
        except ValueError:
            raise MatrixError(400, "M_BAD_JSON", "Invalid Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large(f"Request body exceeds {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise MatrixError(400, "M_UNKNOWN", "Client disconnected") from None
    return b"".join(chunks)


async def read_json_body(
    request: Request,
    max_bytes: int = DEFAULT_MAX_BODY,
    *,
    require_object: bool = True,
    allow_empty: bool = False,
) -> Any:
    """Parse the body strictly; `allow_empty` turns an empty body into ``{}``."""
    raw = await read_body_limited(request, max_bytes)
    if not raw.strip():
        if allow_empty:
            return {}
        raise not_json("Request body is empty; expected JSON")
    try:
        value = parse_canonical_json(raw)
    except NotJSONError as e:
        raise not_json(f"Content not JSON: {e}") from None
    except CanonicalJSONError as e:
        raise bad_json(str(e)) from None
    if require_object and not isinstance(value, dict):
        raise bad_json("Request body must be a JSON object")
    return value


def json_body(
    max_bytes: int = DEFAULT_MAX_BODY, *, allow_empty: bool = False
) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """A FastAPI dependency: ``body: dict = Depends(json_body(65536))``."""

    async def dep(request: Request) -> dict[str, Any]:
        result: dict[str, Any] = await read_json_body(request, max_bytes, allow_empty=allow_empty)
        return result

    return dep
