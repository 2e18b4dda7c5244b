"""Matrix error type and FastAPI handlers used by the userapi and the account routes.

Stand-in for `libs.errors` (MatrixError, install_error_handlers) while that library
is being written; the names and behaviour match its documented contract so the
switch is an import change.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class MatrixError(Exception):
    """An error answered as `{"errcode": ..., "error": ..., **extra}` with `status`."""

    def __init__(self, status: int, errcode: str, error: str = "", **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error or errcode
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.error}
        body.update(self.extra)
        return body


def forbidden(msg: str = "Forbidden") -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", msg)


def not_found(msg: str = "Not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", msg)


def bad_json(msg: str = "Bad JSON") -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def not_json(msg: str = "Content not JSON") -> MatrixError:
    return MatrixError(400, "M_NOT_JSON", msg)


def invalid_param(msg: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", msg)


def missing_param(msg: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", msg)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    return MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=retry_after_ms)


_STATUS_ERRCODES = {
    400: "M_UNKNOWN",
    401: "M_UNAUTHORIZED",
    403: "M_FORBIDDEN",
    404: "M_UNRECOGNIZED",
    405: "M_UNRECOGNIZED",
    413: "M_TOO_LARGE",
    429: "M_LIMIT_EXCEEDED",
}


def install_error_handlers(app: FastAPI) -> None:
    """Map MatrixError, validation errors and HTTP errors to Matrix error JSON."""

    async def on_matrix(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MatrixError)
        return JSONResponse(exc.to_json(), status_code=exc.status)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"errcode": "M_NOT_JSON", "error": "Content not JSON"}, 400)
        return JSONResponse({"errcode": "M_BAD_JSON", "error": json.dumps(errors, default=str)[:500]}, 400)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_ERRCODES.get(exc.status_code, "M_UNKNOWN")
        msg = "Unrecognized request" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse({"errcode": code, "error": msg}, status_code=exc.status_code)

    async def on_other(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"errcode": "M_UNKNOWN", "error": "Internal server error"}, 500)

    app.add_exception_handler(MatrixError, on_matrix)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_other)
