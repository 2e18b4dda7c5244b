"""Matrix errors: `MatrixError` and constructors for the common errcodes.

Raise these anywhere (services, internal APIs); the HTTP edge
(`libs.http.install_error_handlers`) turns them into the spec's JSON body
``{"errcode": ..., "error": ..., **extra}`` with the given status. Pure: no
FastAPI import here.
"""
from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error the client sees: HTTP status, Matrix errcode, message, extra fields."""

    def __init__(
        self,
        status: int,
        errcode: str,
        error: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra
        self.headers = headers or {}
        # A response body of another shape than {errcode, error, **extra}, e.g. the
        # user-interactive auth 401 (no errcode on the first request). Travels as-is
        # over the internal RPC.
        self.body: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.body is not None:
            return dict(self.body)
        return {**self.extra, "errcode": self.errcode, "error": self.error}

    def __repr__(self) -> str:
        return f"MatrixError({self.status}, {self.errcode!r}, {self.error!r})"


def forbidden(error: str = "Forbidden", **extra: Any) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", error, **extra)


def not_found(error: str = "Not found", **extra: Any) -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", error, **extra)


def unknown_token(error: str = "Unknown access token", soft_logout: bool = False) -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", error, soft_logout=soft_logout)


def missing_token(error: str = "Missing access token") -> MatrixError:
    return MatrixError(401, "M_MISSING_TOKEN", error)


def bad_json(error: str = "Malformed JSON body", **extra: Any) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", error, **extra)


def not_json(error: str = "Content not JSON") -> MatrixError:
    return MatrixError(400, "M_NOT_JSON", error)


def too_large(error: str = "Request too large") -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", error)


def user_in_use(error: str = "User ID already taken") -> MatrixError:
    return MatrixError(400, "M_USER_IN_USE", error)


def invalid_username(error: str = "Invalid username") -> MatrixError:
    return MatrixError(400, "M_INVALID_USERNAME", error)


def limit_exceeded(retry_after_ms: int | None = None, error: str = "Too many requests") -> MatrixError:
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if retry_after_ms is not None:
        extra["retry_after_ms"] = int(retry_after_ms)
        # Retry-After is in whole seconds, rounded up (spec v1.10+ suggests sending both).
        headers["Retry-After"] = str(max(1, -(-int(retry_after_ms) // 1000)))
    return MatrixError(429, "M_LIMIT_EXCEEDED", error, headers=headers, **extra)


def unrecognized(error: str = "Unrecognized request", status: int = 404) -> MatrixError:
    """404 for an unknown endpoint, 405 for a known endpoint with the wrong method."""
    return MatrixError(status, "M_UNRECOGNIZED", error)


def unknown(error: str = "Internal server error", status: int = 500) -> MatrixError:
    return MatrixError(status, "M_UNKNOWN", error)


def invalid_param(error: str = "Invalid parameter", **extra: Any) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", error, **extra)


def missing_param(error: str = "Missing parameter", **extra: Any) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", error, **extra)


def room_in_use(error: str = "Room alias already taken") -> MatrixError:
    return MatrixError(400, "M_ROOM_IN_USE", error)


def unsupported_room_version(error: str = "Unsupported room version") -> MatrixError:
    return MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", error)


def incompatible_room_version(room_version: str, error: str | None = None) -> MatrixError:
    return MatrixError(
        400,
        "M_INCOMPATIBLE_ROOM_VERSION",
        error or f"Your homeserver does not support room version {room_version}",
        room_version=room_version,
    )


def guest_access_forbidden(error: str = "Guest access is not allowed") -> MatrixError:
    return MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", error)


def exclusive(error: str = "This namespace is reserved by an application service") -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", error)


def unavailable(error: str = "Service temporarily unavailable, try again later") -> MatrixError:
    """A dependency (database, log broker) is down: 503 M_UNKNOWN."""
    return MatrixError(503, "M_UNKNOWN", error)
