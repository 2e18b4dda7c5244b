"""X-Matrix request authentication (server-server spec, "Request Authentication").

Every federation request carries
``Authorization: X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="..."``
where `sig` is the origin's signature of the canonical JSON object
``{"method", "uri", "origin", "destination", "content"?}``.

The header follows RFC 9110 auth-params: comma-separated ``name=value`` pairs, names
case-insensitive, values a token or a quoted-string (with backslash escapes). We
always send quoted values; we accept both. Pure code, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from libs.events.signing import SigningKey, VerifyKey, compute_signature, verify_json_signature

SCHEME = "X-Matrix"
MAX_HEADER_BYTES = 8192
# RFC 9110 tchar.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class XMatrixError(ValueError):
    """The Authorization header is missing, malformed or does not verify (401 M_UNAUTHORIZED)."""

    errcode = "M_UNAUTHORIZED"


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    origin: str
    key_id: str
    sig: str
    destination: str | None = None


def _parse_params(s: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, n = 0, len(s)
    while True:
        while i < n and s[i] in " \t,":
            i += 1
        if i >= n:
            return params
        start = i
        while i < n and s[i] in _TCHAR:
            i += 1
        name = s[start:i].lower()
        if not name:
            raise XMatrixError(f"bad character {s[i]!r} in Authorization parameters")
        while i < n and s[i] in " \t":
            i += 1
        if i >= n or s[i] != "=":
            raise XMatrixError(f"parameter {name!r} has no value")
        i += 1
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == '"':
            i += 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise XMatrixError("unterminated quoted string")
                c = s[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise XMatrixError("dangling escape in quoted string")
                    c = s[i + 1]
                    i += 1
                if c in "\r\n\x00" or (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F:
                    raise XMatrixError("control character in quoted string")
                out.append(c)
                i += 1
            value = "".join(out)
        else:
            start = i
            while i < n and s[i] in _TCHAR:
                i += 1
            value = s[start:i]
            if not value:
                raise XMatrixError(f"parameter {name!r} has an empty value")
        if name in params:
            raise XMatrixError(f"duplicate parameter {name!r}")
        params[name] = value
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] != ",":
            raise XMatrixError("parameters must be separated by commas")


def parse_xmatrix(header: str) -> XMatrixAuth:
    """Parse one Authorization header value; raise XMatrixError if it is not a usable X-Matrix one."""
    if not isinstance(header, str) or len(header.encode("utf-8", "surrogatepass")) > MAX_HEADER_BYTES:
        raise XMatrixError("Authorization header missing or too long")
    scheme, sep, rest = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower() or not sep:
        raise XMatrixError("Authorization scheme is not X-Matrix")
    params = _parse_params(rest)
    for required in ("origin", "key", "sig"):
        if not params.get(required):
            raise XMatrixError(f"X-Matrix {required} is missing")
    origin, key_id, dest = params["origin"], params["key"], params.get("destination")
    if not is_valid_server_name(origin):
        raise XMatrixError("X-Matrix origin is not a valid server name")
    if dest is not None and not is_valid_server_name(dest):
        raise XMatrixError("X-Matrix destination is not a valid server name")
    if ":" not in key_id:
        raise XMatrixError("X-Matrix key must be algorithm:version")
    return XMatrixAuth(origin=origin, key_id=key_id, sig=params["sig"], destination=dest)


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_xmatrix(auth: XMatrixAuth) -> str:
    parts = [f"origin={_quote(auth.origin)}"]
    if auth.destination is not None:
        parts.append(f"destination={_quote(auth.destination)}")
    parts += [f"key={_quote(auth.key_id)}", f"sig={_quote(auth.sig)}"]
    return f"{SCHEME} " + ",".join(parts)


def request_signing_object(method: str, uri: str, origin: str, destination: str,
                           content: Any | None = None) -> dict[str, Any]:
    """The object the origin signs. `uri` is the path with its query string, exactly as
    sent (percent-encoding included); `content` is omitted when the request has no body."""
    obj: dict[str, Any] = {"method": method.upper(), "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(key: SigningKey, origin: str, destination: str, method: str, uri: str,
                 content: Any | None = None) -> str:
    """The Authorization header value for an outbound request."""
    sig = compute_signature(request_signing_object(method, uri, origin, destination, content), key)
    return format_xmatrix(XMatrixAuth(origin=origin, key_id=key.key_id, sig=sig, destination=destination))


def verify_request(auth: XMatrixAuth, our_name: str, method: str, uri: str, content: Any | None,
                   verify_key: VerifyKey) -> None:
    """Raise XMatrixError unless `auth.sig` is the origin's signature of this request to us.

    A missing destination is accepted (servers before spec v1.3 did not send it) and
    means us; a different one is refused."""
    if auth.destination is not None and auth.destination != our_name:
        raise XMatrixError("request is not for this server")
    obj = request_signing_object(method, uri, auth.origin, our_name, content)
    obj["signatures"] = {auth.origin: {auth.key_id: auth.sig}}
    try:
        # Floats in the body do not make the request unauthenticated: the PDU carrying
        # them is refused afterwards, for its room version (M_BAD_JSON).
        verify_json_signature(obj, auth.origin, auth.key_id, verify_key, lenient_numbers=True)
    except ValueError as e:
        raise XMatrixError(f"request signature does not verify: {e}") from None


def is_valid_server_name(name: str) -> bool:
    """Spec grammar: hostname (DNS name / IPv4) or [IPv6], optional :port (1-65535)."""
    from .discovery import parse_server_name

    try:
        parse_server_name(name)
    except ValueError:
        return False
    return True


def first_xmatrix_header(values: Mapping[str, Any] | list[str]) -> str | None:
    """Pick the X-Matrix value among several Authorization headers (others are ignored)."""
    items = values if isinstance(values, list) else list(values.values())
    for v in items:
        if isinstance(v, str) and v.strip().lower().startswith(SCHEME.lower() + " "):
            return v
    return None
