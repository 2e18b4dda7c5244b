"""Inbound request authentication: a FastAPI dependency that checks the X-Matrix header.

    origin: str = Depends(fed_auth)

Missing header, a destination other than us, an unknown key or a bad signature:
401 M_UNAUTHORIZED (the spec's answer for unauthenticated federation requests); a
header that does not parse (e.g. an origin that is not a server name): 400
M_UNAUTHORIZED, a malformed request rather than a failed authentication.
The body is parsed strictly (and size-limited) before verification,
because the signature covers it.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from libs.errors import MatrixError
from libs.errors import bad_json, not_json
from libs.events.canonical_json import CanonicalJSONError, NotJSONError, parse_canonical_json
from libs.http import read_body_limited

from .keyring import KeyRing
from .xmatrix import XMatrixError, first_xmatrix_header, parse_xmatrix, verify_request

log = logging.getLogger(__name__)

DEFAULT_MAX_FEDERATION_BODY = 4 * 1024 * 1024


def unauthorized(error: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", error)


def malformed(error: str) -> MatrixError:
    return MatrixError(400, "M_UNAUTHORIZED", error)


def request_uri(request: Request) -> str:
    """Path and query exactly as sent (the origin signed the raw form)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    uri = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    qs = request.scope.get("query_string") or b""
    return uri + ("?" + qs.decode("latin-1") if qs else "")


class FederationAuth:
    def __init__(self, server_name: str, keyring: KeyRing, max_body_bytes: int = DEFAULT_MAX_FEDERATION_BODY) -> None:
        self.server_name = server_name
        self.keyring = keyring
        self.max_body_bytes = max_body_bytes

    async def authenticate(self, request: Request) -> tuple[str, Any]:
        """(origin, parsed body or None)."""
        headers = request.headers.getlist("authorization")
        self._check_header(headers)
        content: Any = None
        raw = await read_body_limited(request, self.max_body_bytes)
        if raw.strip():
            # Signed as JSON: a body that is not (strict) JSON cannot be authenticated.
            try:
                content = parse_canonical_json(raw)
            except NotJSONError as e:
                raise not_json(f"Content not JSON: {e}") from None
            except CanonicalJSONError as e:
                raise bad_json(str(e)) from None
        return await self.verify(request.method, request_uri(request), headers, content), content

    def _check_header(self, headers: list[str]) -> None:
        header = first_xmatrix_header(headers)
        if header is None:
            raise unauthorized("Missing X-Matrix Authorization header")
        try:
            parse_xmatrix(header)
        except XMatrixError as e:
            raise malformed(str(e)) from None

    async def verify(self, method: str, uri: str, headers: list[str], content: Any) -> str:
        """The origin of a request (`uri`: path and query as sent) whose Authorization
        headers are `headers`; 401 M_UNAUTHORIZED unless it verifies."""
        header = first_xmatrix_header(headers)
        if header is None:
            raise unauthorized("Missing X-Matrix Authorization header")
        try:
            auth = parse_xmatrix(header)
        except XMatrixError as e:
            raise malformed(str(e)) from None
        if auth.destination is not None and auth.destination != self.server_name:
            raise unauthorized("Request is not addressed to this server")
        if auth.origin == self.server_name:
            raise unauthorized("Request claims to come from this server")
        now = self.keyring.clock_ms()
        key = await self.keyring.get_verify_key(auth.origin, auth.key_id, at_ts=now)
        if key is None:
            raise unauthorized(f"No valid key {auth.key_id} of {auth.origin}")
        try:
            verify_request(auth, self.server_name, method, uri, content, key)
        except XMatrixError as e:
            raise unauthorized(str(e)) from None
        return auth.origin

    async def __call__(self, request: Request) -> str:
        origin, content = await self.authenticate(request)
        request.state.federation_body = content
        return origin
