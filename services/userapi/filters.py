"""Shape validation of client filters (Client-Server spec, "Filtering").

Unknown keys are kept and ignored (clients add experimental fields); known keys
must have the spec's types. Type errors raise FilterError("M_BAD_JSON", ...),
out-of-range values FilterError("M_INVALID_PARAM", ...).
"""
from __future__ import annotations

from typing import Any


class FilterError(ValueError):
    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode


def _bad(path: str, what: str) -> FilterError:
    return FilterError("M_BAD_JSON", f"{path}: {what}")


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    return value


def _str_list(obj: dict[str, Any], key: str, path: str) -> None:
    if key in obj:
        v = obj[key]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _bad(f"{path}.{key}", "must be a list of strings")


def _id_list(obj: dict[str, Any], key: str, path: str, sigil: str) -> None:
    """A list of room or user IDs: each needs its sigil and a server name."""
    _str_list(obj, key, path)
    for x in obj.get(key, ()):
        if not (x.startswith(sigil) and ":" in x):
            raise _bad(f"{path}.{key}", f"{x!r} is not a valid {'room' if sigil == '!' else 'user'} ID")


def _bool(obj: dict[str, Any], key: str, path: str) -> None:
    if key in obj and not isinstance(obj[key], bool):
        raise _bad(f"{path}.{key}", "must be a boolean")


def _event_filter(value: Any, path: str) -> None:
    obj = _obj(value, path)
    if "limit" in obj:
        limit = obj["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise _bad(f"{path}.limit", "must be an integer")
        if limit < 0:
            raise FilterError("M_INVALID_PARAM", f"{path}.limit: must not be negative")
    for key in ("senders", "not_senders"):
        _id_list(obj, key, path, "@")
    for key in ("types", "not_types"):
        _str_list(obj, key, path)


def _room_event_filter(value: Any, path: str) -> None:
    _event_filter(value, path)
    obj = value
    for key in ("rooms", "not_rooms"):
        _id_list(obj, key, path, "!")
    for key in ("contains_url", "lazy_load_members", "include_redundant_members", "unread_thread_notifications"):
        _bool(obj, key, path)


def validate_filter(filter_json: Any) -> dict[str, Any]:
    """Return the filter unchanged if its shape is valid; raise FilterError otherwise."""
    obj = _obj(filter_json, "filter")
    _str_list(obj, "event_fields", "filter")
    if "event_format" in obj and obj["event_format"] not in ("client", "federation"):
        raise _bad("filter.event_format", "must be 'client' or 'federation'")
    for key in ("presence", "account_data"):
        if key in obj:
            _event_filter(obj[key], f"filter.{key}")
    if "room" in obj:
        room = _obj(obj["room"], "filter.room")
        for key in ("rooms", "not_rooms"):
            _id_list(room, key, "filter.room", "!")
        _bool(room, "include_leave", "filter.room")
        for key in ("timeline", "state", "ephemeral", "account_data"):
            if key in room:
                _room_event_filter(room[key], f"filter.room.{key}")
    return obj
