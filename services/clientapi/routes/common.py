"""What the account routes share: their dependencies, body parsing, rate limiting."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, ValidationError

from libs.config.model import HomeserverConfig
from libs.errors import MatrixError, bad_json, forbidden, limit_exceeded
from libs.http import read_json_body
from libs.ratelimit import RateLimiter
from services.userapi.api import Device, UserAPI
from services.userapi.client_auth import ClientAuth

M = TypeVar("M", bound=BaseModel)

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


@dataclass
class AccountRoutesContext:
    config: HomeserverConfig
    userapi: UserAPI
    auth: ClientAuth
    ratelimiter: RateLimiter
    # The profile of a user of another server (its /query/profile), or None when unknown;
    # set once the federationapi exists (embedded mode). None: local profiles only.
    remote_profile: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None
    # `remote_keys(server, path, body)`: POST /_matrix/federation/v1/user/keys/{query,claim}
    # at `server` (path "query" or "claim"), the answer body; None: remote users fail (503).
    remote_keys: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None


class Body(BaseModel):
    """Request bodies: strict types (no "1" for 1), unknown keys ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


async def read_body(ctx: AccountRoutesContext, request: Request, allow_empty: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = await read_json_body(
        request, ctx.config.client.max_request_body_bytes, allow_empty=allow_empty
    )
    return body


def parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        if first.get("type") == "missing":
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing {where}") from None
        raise bad_json(f"{where}: {first.get('msg', 'invalid')}") from None


async def parse_body(
    ctx: AccountRoutesContext, request: Request, model: type[M], allow_empty: bool = False
) -> tuple[M, dict[str, Any]]:
    body = await read_body(ctx, request, allow_empty)
    return parse(model, body), body


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def ratelimit(ctx: AccountRoutesContext, action: str, key: str) -> None:
    wait = ctx.ratelimiter.check(action, key)
    if wait:
        raise limit_exceeded(wait)


def require_self(device: Device, user_id: str, what: str) -> None:
    if device.user_id != user_id:
        raise forbidden(f"Cannot {what} for other users")
