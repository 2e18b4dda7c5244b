"""Serving an implementation of an internal-API Protocol over HTTP.

    app.include_router(rpc_router("roomserver", RoomserverAPI, roomserver.api, secret=...))

mounts ``POST /_internal/roomserver/<method>`` for every method of the Protocol.
Body: ``{"args": {name: value}}``; answer ``{"result": value}``, or, when the
implementation raised a MatrixError, ``{"matrix_error": {status, errcode, error,
extra, headers}}`` (HTTP 200: the call worked, its answer is an error), which the
client re-raises as the same MatrixError. Only the router under /_internal is
mounted here; the public router (nginx) never forwards /_internal.
"""
from __future__ import annotations

import hmac
import inspect
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from libs.errors import MatrixError
from libs.log.api import LogError
from libs.storage.errors import DatabaseUnavailable

from .codec import CodecError, decode, encode
from .protocol import MethodSpec, protocol_methods

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Axon-Internal-Secret"
PATH_PREFIX = "/_internal"
MAX_BODY_BYTES = 64 * 1024 * 1024


def _error(err: MatrixError) -> dict[str, Any]:
    return {"matrix_error": {"status": err.status, "errcode": err.errcode, "error": err.error,
                             "extra": err.extra, "headers": err.headers, "body": err.body}}


def _reject(status: int, errcode: str, error: str) -> JSONResponse:
    return JSONResponse({"errcode": errcode, "error": error}, status_code=status)


def rpc_router(service: str, protocol: type, impl: object, *, secret: str) -> APIRouter:
    """Routes for every Protocol method of `impl` under /_internal/<service>/."""
    router = APIRouter(prefix=f"{PATH_PREFIX}/{service}")
    expected = secret.encode("utf-8")

    def handler_for(spec: MethodSpec) -> Any:
        method = getattr(impl, spec.name)

        async def handle(request: Request) -> Response:
            if expected:
                got = request.headers.get(SECRET_HEADER, "").encode("utf-8")
                if not hmac.compare_digest(got, expected):
                    return _reject(403, "M_FORBIDDEN", "internal API: bad or missing secret")
            raw = await request.body()
            if len(raw) > MAX_BODY_BYTES:
                return _reject(413, "M_TOO_LARGE", "internal request too large")
            try:
                body = json.loads(raw or b"{}")
                args = body.get("args", {}) if isinstance(body, dict) else None
                if not isinstance(args, dict):
                    raise CodecError("args must be an object")
                kwargs: dict[str, Any] = {}
                for name, tp, default in spec.params:
                    if name in args:
                        kwargs[name] = decode(args[name], tp)
                    elif default is not inspect.Parameter.empty:
                        kwargs[name] = default
                    else:
                        raise CodecError(f"missing argument {name!r}")
            except (ValueError, CodecError) as e:
                return _reject(400, "M_BAD_JSON", f"internal API {spec.name}: {e}")
            try:
                result = await method(**kwargs)
            except MatrixError as e:
                return JSONResponse(_error(e))
            except DatabaseUnavailable:
                return JSONResponse(_error(MatrixError(503, "M_UNKNOWN", "database unavailable")))
            except LogError:  # broker unreachable, a send or a reply timed out: retryable, as at the HTTP edge
                return JSONResponse(_error(MatrixError(503, "M_UNKNOWN", "event log unavailable")))
            return JSONResponse({"result": encode(result, spec.returns)})

        handle.__name__ = f"internal_{service}_{spec.name}"
        return handle

    for spec in protocol_methods(protocol).values():
        router.add_api_route(f"/{spec.name}", handler_for(spec), methods=["POST"], include_in_schema=False)
    return router

