"""Exception handlers turning everything into Matrix error JSON (never a bare 500).

`install_error_handlers(app)`:
  MatrixError -> its status/JSON; request validation errors -> 400 M_BAD_JSON
  (body) or M_MISSING_PARAM / M_INVALID_PARAM (query, path, header); unknown
  route -> 404 M_UNRECOGNIZED; wrong method -> 405 M_UNRECOGNIZED; canonical JSON
  errors -> M_NOT_JSON / M_BAD_JSON; DatabaseUnavailable and LogError (the broker is
  unreachable, a send timed out) -> 503 M_UNKNOWN; anything else -> 500 M_UNKNOWN with
  the traceback logged, nothing internal in the body.
It also installs the CORS middleware (libs/http/cors.py).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.errors import MatrixError
from libs.events.canonical_json import CanonicalJSONError
from libs.http.cors import CORSMiddleware
from libs.log.api import LogError
from libs.storage.errors import DatabaseUnavailable

log = logging.getLogger("axon.http")


def matrix_error_response(err: MatrixError) -> JSONResponse:
    return JSONResponse(err.to_json(), status_code=err.status, headers=err.headers or None)


def _from_validation(exc: RequestValidationError) -> MatrixError:
    errors: list[dict[str, Any]] = list(exc.errors())
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    where = loc[0] if loc else "body"
    kind = str(first.get("type", ""))
    name = ".".join(loc[1:]) or where
    msg = str(first.get("msg", "invalid"))
    if where == "body":
        if kind == "json_invalid":
            return MatrixError(400, "M_NOT_JSON", "Content not JSON")
        if kind == "missing" and len(loc) == 1:
            return MatrixError(400, "M_NOT_JSON", "Missing JSON body")
        return MatrixError(400, "M_BAD_JSON", f"{name}: {msg}")
    if kind == "missing":
        return MatrixError(400, "M_MISSING_PARAM", f"Missing {where} parameter {name}")
    return MatrixError(400, "M_INVALID_PARAM", f"Invalid {where} parameter {name}: {msg}")


async def _on_matrix_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MatrixError)
    return matrix_error_response(exc)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return matrix_error_response(_from_validation(exc))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err = MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
    elif exc.status_code == 405:
        err = MatrixError(405, "M_UNRECOGNIZED", "Method not allowed")
    elif exc.status_code == 413:
        err = MatrixError(413, "M_TOO_LARGE", "Request too large")
    else:
        code = "M_UNKNOWN" if exc.status_code >= 500 else "M_UNRECOGNIZED"
        err = MatrixError(exc.status_code, code, str(exc.detail))
    if exc.headers:
        err.headers.update(exc.headers)
    return matrix_error_response(err)


async def _on_canonical_json(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CanonicalJSONError)
    return matrix_error_response(MatrixError(400, exc.errcode, str(exc)))


async def _on_db_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return matrix_error_response(
        MatrixError(503, "M_UNKNOWN", "Service temporarily unavailable, try again later")
    )


async def _on_log_error(request: Request, exc: Exception) -> Response:
    # The event log (Kafka) is unreachable or timed out: transient, the client retries
    # (a PUT /send retried with the same txn ID still makes one event).
    log.warning("event log unavailable: %s", exc)
    return matrix_error_response(
        MatrixError(503, "M_UNKNOWN", "Service temporarily unavailable, try again later")
    )


_INTERNAL_BODY = json.dumps({"errcode": "M_UNKNOWN", "error": "Internal server error"}).encode()


class CatchAllMiddleware:
    """Last line: any unhandled exception becomes 500 M_UNKNOWN and one log line.

    (A pure ASGI middleware instead of an `Exception` handler, which Starlette
    would re-raise after responding.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # too late for a clean response; the server closes the connection
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_INTERNAL_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _INTERNAL_BODY})


def install_error_handlers(app: FastAPI, *, cors: bool = True) -> None:
    """Register the Matrix error handlers, the catch-all and (by default) CORS.

    Call before adding other middleware you want outside them (metrics, request id)."""
    app.add_exception_handler(MatrixError, _on_matrix_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(CanonicalJSONError, _on_canonical_json)
    app.add_exception_handler(DatabaseUnavailable, _on_db_unavailable)
    app.add_exception_handler(LogError, _on_log_error)
    app.add_middleware(CatchAllMiddleware)
    if cors:
        app.add_middleware(CORSMiddleware)
