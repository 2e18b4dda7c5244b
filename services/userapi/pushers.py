"""Validation of client-supplied pushers (POST /pushers/set)."""
from __future__ import annotations

from typing import Any

from libs.errors import MatrixError

_REQUIRED_STRINGS = ("kind", "app_id", "app_display_name", "device_display_name", "pushkey", "lang")
_OPTIONAL_STRINGS = ("profile_tag",)
_MAX_LEN = 512


def validate_pusher(body: dict[str, Any]) -> dict[str, Any]:
    """The pusher as GET /pushers returns it; raises a 400 MatrixError when invalid."""
    out: dict[str, Any] = {}
    for key in _REQUIRED_STRINGS:
        if key not in body:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing {key}")
        out[key] = _string(body, key)
    for key in _OPTIONAL_STRINGS:
        if body.get(key) is not None:
            out[key] = _string(body, key)
    data = body.get("data")
    if not isinstance(data, dict):
        raise MatrixError(400, "M_MISSING_PARAM", "Missing data")
    if out["kind"] not in ("http", "email"):
        raise MatrixError(400, "M_INVALID_PARAM", f"Unsupported pusher kind {out['kind']!r}")
    if out["kind"] == "http":
        url = data.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise MatrixError(400, "M_INVALID_PARAM", "http pushers need an http(s) data.url")
    out["data"] = data
    return out


def _string(body: dict[str, Any], key: str) -> str:
    v = body[key]
    if not isinstance(v, str) or len(v) > _MAX_LEN:
        raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a string of at most {_MAX_LEN} characters")
    return v
