"""Canonical JSON (spec appendix): sorted keys by code point, no insignificant
whitespace, UTF-8 output, integers only within [-(2**53)+1, 2**53-1], no floats."""
from __future__ import annotations

import json
from typing import Any

MAX_SAFE_INT = 2**53 - 1
MIN_SAFE_INT = -(2**53) + 1


class CanonicalJSONError(ValueError):
    """The value cannot be represented in canonical JSON (maps to M_BAD_JSON)."""

    errcode = "M_BAD_JSON"


class NotJSONError(CanonicalJSONError):
    """The bytes are not JSON at all (maps to M_NOT_JSON)."""

    errcode = "M_NOT_JSON"


_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def _check(value: Any, depth: int = 0) -> None:
    # Python's json sorts str keys by code point, which is what the spec wants;
    # floats and out-of-range ints are not representable in canonical JSON.
    if depth > 256:
        raise CanonicalJSONError("JSON nested too deeply")
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalJSONError("object keys must be strings")
            _check(v, depth + 1)
    elif t is list or t is tuple:
        for v in value:
            _check(v, depth + 1)
    elif t is int:
        if not MIN_SAFE_INT <= value <= MAX_SAFE_INT:
            raise CanonicalJSONError("integer out of canonical JSON range")
    elif t is float:
        raise CanonicalJSONError("floats are not allowed in canonical JSON")
    elif value is None or t is bool or t is str:
        pass
    else:
        raise CanonicalJSONError(f"cannot encode {t.__name__} as JSON")


def encode_canonical_json(value: Any) -> bytes:
    _check(value)
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError("string contains a lone surrogate") from None
