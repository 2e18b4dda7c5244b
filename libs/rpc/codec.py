"""JSON encoding of internal-API values, driven by the Protocol's type hints.

Dataclasses become objects (field by field), tuples become lists, dicts with
non-string keys (e.g. the roomserver's ``dict[tuple[str, str], dict]``) become a
list of ``[key, value]`` pairs; decoding rebuilds the declared Python types.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any


class CodecError(ValueError):
    """A value does not match the declared type."""


@lru_cache(maxsize=None)
def _dc_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def encode(value: Any, tp: Any) -> Any:
    """Python value of type `tp` → JSON-compatible value."""
    if value is None or tp is Any or tp is None or tp is type(None):
        return value
    origin = typing.get_origin(tp)
    if _is_union(origin):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            base = typing.get_origin(arg) or arg
            if arg is Any or (isinstance(base, type) and isinstance(value, base)):
                return encode(value, arg)
        return _plain(value)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return [encode(v, a) for v, a in zip(value, args)]
        item = args[0] if args else Any
        return [encode(v, item) for v in value]
    if origin is dict or tp is dict:
        k_tp, v_tp = (typing.get_args(tp) or (Any, Any))
        if k_tp is str:
            return {k: encode(v, v_tp) for k, v in value.items()}
        return [[encode(k, k_tp), encode(v, v_tp)] for k, v in value.items()]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _dc_hints(tp)
        return {f.name: encode(getattr(value, f.name), hints.get(f.name, Any)) for f in dataclasses.fields(tp)}
    return _plain(value)


def _plain(value: Any) -> Any:
    """Best effort for Any-typed values: dataclasses and tuples become JSON shapes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def decode(data: Any, tp: Any) -> Any:
    """JSON value → Python value of type `tp` (CodecError when it does not fit)."""
    if tp is Any:
        return data
    if data is None:
        if tp is None or tp is type(None) or _is_union(typing.get_origin(tp)) and type(None) in typing.get_args(tp):
            return None
        raise CodecError(f"null where {tp!r} is expected")
    origin = typing.get_origin(tp)
    if _is_union(origin):
        last: Exception | None = None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return decode(data, arg)
            except CodecError as e:
                last = e
        raise CodecError(str(last) if last else f"no member of {tp!r} fits")
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        if not isinstance(data, list):
            raise CodecError(f"expected a list for {tp!r}")
        args = typing.get_args(tp)
        container = origin or tp
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(data) != len(args):
                raise CodecError(f"expected {len(args)} items for {tp!r}")
            return tuple(decode(v, a) for v, a in zip(data, args))
        item = args[0] if args else Any
        return container(decode(v, item) for v in data)
    if origin is dict or tp is dict:
        k_tp, v_tp = (typing.get_args(tp) or (Any, Any))
        if k_tp is str or k_tp is Any and isinstance(data, dict):
            if not isinstance(data, dict):
                raise CodecError(f"expected an object for {tp!r}")
            return {str(k): decode(v, v_tp) for k, v in data.items()}
        if not isinstance(data, list):
            raise CodecError(f"expected [key, value] pairs for {tp!r}")
        out: dict[Any, Any] = {}
        for pair in data:
            if not isinstance(pair, list) or len(pair) != 2:
                raise CodecError(f"expected [key, value] pairs for {tp!r}")
            out[decode(pair[0], k_tp)] = decode(pair[1], v_tp)
        return out
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(data, dict):
            raise CodecError(f"expected an object for {tp.__name__}")
        hints = _dc_hints(tp)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = decode(data[f.name], hints.get(f.name, Any))
        try:
            return tp(**kwargs)
        except TypeError as e:
            raise CodecError(f"{tp.__name__}: {e}") from None
    if tp is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        raise CodecError("expected a number")
    if tp in (str, int, bool):
        # bool is an int in Python: keep them apart on the wire.
        if type(data) is not tp:
            raise CodecError(f"expected {tp.__name__}")
        return data
    return data
