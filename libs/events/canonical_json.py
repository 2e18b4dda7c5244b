"""Canonical JSON (spec appendix "Canonical JSON") and a strict parser for the edges.

Encoding: keys sorted by code point, no insignificant whitespace, UTF-8 output,
integers only within [-(2**53)+1, 2**53-1], no floats, no NaN/Infinity. orjson does
the work when installed (several times faster than the stdlib, and it sorts keys by
UTF-8 bytes, which is code-point order); the stdlib encoder is the fallback and the
lenient path for old room versions.

Parsing (`parse_canonical_json`) is the one way untrusted JSON enters the server.
Number rules, by context:

* ``room_version`` with ``strict_canonicaljson`` (v6+): the spec makes events with
  floats or out-of-range integers invalid, so any fraction/exponent and any integer
  outside the canonical range is rejected.
* ``room_version`` without it (v1–v5): the spec asks servers to cope with such
  events, so finite floats and integers of up to ``MAX_LENIENT_INT_DIGITS`` digits are
  accepted (they are then hashed with the lenient encoder, as the origin did).
* ``None`` (client-server bodies, key responses, the CLI): finite floats are accepted
  as Python floats (clients may put them in content; event validation rejects them
  later for strict rooms), integers must be within the canonical range.

Everywhere: invalid UTF-8 / not JSON -> NotJSONError (M_NOT_JSON); duplicate keys,
NaN/Infinity, lone surrogates, nesting deeper than MAX_DEPTH -> CanonicalJSONError
(M_BAD_JSON). Nothing raises anything else, and nothing recurses in Python.
"""
from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping

try:  # optional accelerator; identical output (checked by the differential tests)
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    _orjson = None

if TYPE_CHECKING:
    from .room_versions import RoomVersion

MAX_SAFE_INT = 2**53 - 1
MIN_SAFE_INT = -(2**53) + 1
# orjson refuses deeper structures, so the parser never lets one in.
MAX_DEPTH = 128
MAX_LENIENT_INT_DIGITS = 64


class CanonicalJSONError(ValueError):
    """The value cannot be represented in canonical JSON (maps to M_BAD_JSON)."""

    errcode = "M_BAD_JSON"


class NotJSONError(CanonicalJSONError):
    """The bytes are not JSON at all (maps to M_NOT_JSON)."""

    errcode = "M_NOT_JSON"


def _default(obj: Any) -> Any:
    # Read-only mappings (e.g. frozen event views) encode like dicts.
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


_std_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), default=_default
)

_STR, _INT, _BOOL, _DICT, _LIST, _TUPLE = str, int, bool, dict, list, tuple


# orjson (strict-integer mode) already rejects big ints, non-str keys and lone
# surrogates; what it lets through is floats. These scans find any leaf that is not
# str/int/bool/None quickly (bounded depth: orjson refused anything deeper than 255).
def _odd_leaf(values: Iterable[Any]) -> bool:
    """True if any leaf under `values` (a dict's values or a list's items) is not
    str/int/bool/None."""
    for v in values:
        t = type(v)
        if t is _STR or t is _INT or t is _BOOL or v is None:
            continue
        if t is _DICT:
            if _odd_leaf(v.values()):
                return True
        elif t is _LIST or t is _TUPLE:
            if _odd_leaf(v):
                return True
        else:
            return True
    return False


def _walk_check(value: Any) -> None:
    """Slow exact check (iterative): used only when the fast scan is inconclusive."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict or isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise CanonicalJSONError("object keys must be strings")
                stack.append(item)
        elif t is list or t is tuple:
            stack.extend(v)
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        elif isinstance(v, int):
            if not MIN_SAFE_INT <= v <= MAX_SAFE_INT:
                raise CanonicalJSONError("integer out of canonical JSON range")
        elif isinstance(v, float):
            raise CanonicalJSONError("floats are not allowed in canonical JSON")
        elif isinstance(v, Mapping):
            stack.append(dict(v))


def _encode_std(value: Any) -> bytes:
    try:
        return _std_encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError("string contains a lone surrogate") from None
    except RecursionError:
        raise CanonicalJSONError("JSON nested too deeply") from None
    except (TypeError, ValueError) as e:
        raise CanonicalJSONError(str(e)) from None


if _orjson is not None:
    _OPTS = _orjson.OPT_SORT_KEYS | _orjson.OPT_STRICT_INTEGER
    _dumps = _orjson.dumps

    def _encode_fast(value: Any) -> bytes:
        try:
            return _dumps(value, default=_default, option=_OPTS)
        except TypeError as e:  # orjson.JSONEncodeError subclasses TypeError
            msg = str(e)
            if "53-bit" in msg or "64-bit" in msg:
                raise CanonicalJSONError("integer out of canonical JSON range") from None
            if "surrogate" in msg:
                raise CanonicalJSONError("string contains a lone surrogate") from None
            if "Recursion" in msg:
                raise CanonicalJSONError("JSON nested too deeply") from None
            # Non-str keys and unknown types: let the exact check name the problem.
            _walk_check(value)
            raise CanonicalJSONError(msg) from None

else:  # pragma: no cover
    _encode_fast = _encode_std


def encode_canonical_json(value: Any, *, strict: bool = True) -> bytes:
    """Canonical JSON bytes of `value`.

    strict=True (the default, and what every room version from 6 on requires) rejects
    floats, NaN and integers outside the canonical range with CanonicalJSONError.
    strict=False encodes floats and big integers the way Python's json does (as
    Synapse and the `canonicaljson` package do), for events of room versions 1–5.
    """
    if not strict:
        return _encode_std(value)
    out = _encode_fast(value)
    if _orjson is None:  # pragma: no cover - the stdlib encoder checks nothing
        _walk_check(value)
        return out
    t = type(value)
    if t is _DICT:
        odd = _odd_leaf(value.values())
    elif t is _LIST or t is _TUPLE:
        odd = _odd_leaf(value)
    else:
        odd = not (t is _STR or t is _INT or t is _BOOL or value is None)
    if odd:
        # A float somewhere, or a type the quick scan does not know: be exact.
        _walk_check(value)
    return out


def encode_canonical_json_prechecked(value: Any) -> bytes:
    """`encode_canonical_json(value)` (strict) without the leaf scan, for a value made
    only of leaves that already passed a strict encoding (e.g. an event's redacted form
    right after its content hash was computed). orjson still refuses big integers,
    non-str keys and lone surrogates."""
    if _orjson is None:  # pragma: no cover
        return encode_canonical_json(value)
    return _encode_fast(value)


def encode_canonical_json_str(value: Any) -> str:
    return encode_canonical_json(value).decode("utf-8")


# --- parsing -------------------------------------------------------------------------

_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]|\\u[dD][c-fC-F]")


def _reject_constant(name: str) -> Any:
    raise CanonicalJSONError(f"{name} is not valid JSON")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise CanonicalJSONError(f"duplicate key {k!r}")
            seen.add(k)
    return d


def _int_strict(s: str) -> int:
    # Length first: int() of a 100k-digit string is slow (and capped by Python).
    if len(s) > 17:
        raise CanonicalJSONError("integer out of canonical JSON range")
    v = int(s)
    if not MIN_SAFE_INT <= v <= MAX_SAFE_INT:
        raise CanonicalJSONError("integer out of canonical JSON range")
    return v


def _int_lenient(s: str) -> int:
    if len(s) > MAX_LENIENT_INT_DIGITS:
        raise CanonicalJSONError("integer too long")
    return int(s)


def _float_rejected(s: str) -> Any:
    raise CanonicalJSONError("floats are not allowed in canonical JSON")


def _float_finite(s: str) -> float:
    if len(s) > 400:
        raise CanonicalJSONError("number too long")
    f = float(s)
    if math.isinf(f):  # e.g. 1e999 overflows to inf
        raise CanonicalJSONError("number out of range")
    return f


def _make_decoder(parse_int: Any, parse_float: Any) -> json.JSONDecoder:
    return json.JSONDecoder(
        object_pairs_hook=_pairs_no_duplicates,
        parse_int=parse_int,
        parse_float=parse_float,
        parse_constant=_reject_constant,
        strict=True,  # raw control characters inside strings are not JSON
    )


_DECODER_STRICT = _make_decoder(_int_strict, _float_rejected)
_DECODER_LENIENT = _make_decoder(_int_lenient, _float_finite)
_DECODER_GENERIC = _make_decoder(_int_strict, _float_finite)


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_canonical_json(data: bytes | bytearray | memoryview | str, room_version: RoomVersion | None = None) -> Any:
    """Parse untrusted JSON strictly (see the module docstring for the number rules).

    Raises NotJSONError (M_NOT_JSON) or CanonicalJSONError (M_BAD_JSON), nothing else.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise NotJSONError("body is not valid UTF-8") from None
    elif isinstance(data, str):
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalJSONError("string contains a lone surrogate") from None
    else:
        raise NotJSONError("body is not text")
    if room_version is None:
        decoder = _DECODER_GENERIC
    elif room_version.strict_canonicaljson:
        decoder = _DECODER_STRICT
    else:
        decoder = _DECODER_LENIENT
    # A document with few brackets cannot be deep; only count exactly when it might be.
    maybe_deep = text.count("[") + text.count("{") > MAX_DEPTH
    if maybe_deep and _bracket_depth(text) > MAX_DEPTH:
        raise CanonicalJSONError("JSON nested too deeply")
    try:
        value = decoder.decode(text)
    except CanonicalJSONError:
        raise
    except json.JSONDecodeError as e:
        raise NotJSONError(f"not JSON: {e.msg} at {e.pos}") from None
    except RecursionError:
        raise CanonicalJSONError("JSON nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:
        raise CanonicalJSONError(str(e)) from None
    if "\\" in text and _LONE_SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise CanonicalJSONError("string contains a lone surrogate")
    return value


_STR_IN_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _bracket_depth(text: str) -> int:
    """Maximum bracket nesting of `text`, ignoring brackets inside strings."""
    depth = best = 0
    for ch in _NOT_BRACKET.sub("", _STR_IN_TEXT.sub("", text)):
        if ch == "[" or ch == "{":
            depth += 1
            if depth > best:
                best = depth
        elif ch == "]" or ch == "}":
            depth -= 1
    return best


def normalise_numbers(value: Any) -> Any:
    """Integral floats within range become ints (the spec canonicalises ``1e10`` to
    ``10000000000`` and ``-0`` to ``0``); any other float is a CanonicalJSONError."""
    if isinstance(value, float):
        if value.is_integer() and MIN_SAFE_INT <= value <= MAX_SAFE_INT:
            return int(value)
        raise CanonicalJSONError("floats are not allowed in canonical JSON")
    if isinstance(value, dict):
        return {k: normalise_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise_numbers(v) for v in value]
    return value
