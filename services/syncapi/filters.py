"""Client filters (spec "Filtering"): parsing, validation and matching.

Parsing never raises anything but `FilterError` (→ M_BAD_JSON / M_INVALID_PARAM)."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMELINE_LIMIT = 10
MAX_LIMIT = 1000


class FilterError(ValueError):
    """A filter that is not valid JSON of the right shape."""


def _str_list(obj: dict[str, Any], key: str) -> list[str] | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise FilterError(f"'{key}' must be a list of strings")
    return v


def _match_type(t: str, patterns: list[str]) -> bool:
    return any(p == t or ("*" in p and fnmatch.fnmatchcase(t, p)) for p in patterns)


@dataclass
class EventFilter:
    limit: int | None = None
    types: list[str] | None = None
    not_types: list[str] = field(default_factory=list)
    senders: list[str] | None = None
    not_senders: list[str] = field(default_factory=list)
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False

    @classmethod
    def parse(cls, obj: Any) -> EventFilter:
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise FilterError("filter must be an object")
        limit = obj.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise FilterError("'limit' must be a non-negative integer")
        cu = obj.get("contains_url")
        if cu is not None and not isinstance(cu, bool):
            raise FilterError("'contains_url' must be a boolean")
        llm = obj.get("lazy_load_members", False)
        irm = obj.get("include_redundant_members", False)
        if not isinstance(llm, bool) or not isinstance(irm, bool):
            raise FilterError("lazy-loading options must be booleans")
        return cls(
            limit=min(limit, MAX_LIMIT) if limit is not None else None,
            types=_str_list(obj, "types"), not_types=_str_list(obj, "not_types") or [],
            senders=_str_list(obj, "senders"), not_senders=_str_list(obj, "not_senders") or [],
            rooms=_str_list(obj, "rooms"), not_rooms=_str_list(obj, "not_rooms") or [],
            contains_url=cu, lazy_load_members=llm, include_redundant_members=irm,
        )

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows(self, pdu: dict[str, Any]) -> bool:
        t = pdu.get("type", "")
        t = t if isinstance(t, str) else ""
        if self.not_types and _match_type(t, self.not_types):
            return False
        if self.types is not None and not _match_type(t, self.types):
            return False
        sender = pdu.get("sender", "")
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        rid = pdu.get("room_id")
        if isinstance(rid, str) and not self.allows_room(rid):
            return False
        if self.contains_url is not None:
            c = pdu.get("content")
            has = isinstance(c, dict) and isinstance(c.get("url"), str)
            if has != self.contains_url:
                return False
        return True

    def allows_all_types(self) -> bool:
        return self.types is None and not self.not_types and self.senders is None and not self.not_senders \
            and self.contains_url is None


@dataclass
class RoomFilter:
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    include_leave: bool = False
    timeline: EventFilter = field(default_factory=EventFilter)
    state: EventFilter = field(default_factory=EventFilter)
    ephemeral: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass
class SyncFilter:
    room: RoomFilter = field(default_factory=RoomFilter)
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    event_fields: list[str] | None = None

    @classmethod
    def parse(cls, obj: Any) -> SyncFilter:
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise FilterError("filter must be an object")
        room = obj.get("room") or {}
        if not isinstance(room, dict):
            raise FilterError("'room' must be an object")
        include_leave = room.get("include_leave", False)
        if not isinstance(include_leave, bool):
            raise FilterError("'include_leave' must be a boolean")
        fmt = obj.get("event_format", "client")
        if fmt not in ("client", "federation"):
            raise FilterError("'event_format' must be client or federation")
        return cls(
            room=RoomFilter(
                rooms=_str_list(room, "rooms"), not_rooms=_str_list(room, "not_rooms") or [],
                include_leave=include_leave,
                timeline=EventFilter.parse(room.get("timeline")),
                state=EventFilter.parse(room.get("state")),
                ephemeral=EventFilter.parse(room.get("ephemeral")),
                account_data=EventFilter.parse(room.get("account_data")),
            ),
            presence=EventFilter.parse(obj.get("presence")),
            account_data=EventFilter.parse(obj.get("account_data")),
            event_fields=_str_list(obj, "event_fields"),
        )


def _split_field(path: str) -> list[str]:
    # "content.body" -> ["content", "body"]; "\\." escapes a literal dot.
    parts, cur, i = [], "", 0
    while i < len(path):
        c = path[i]
        if c == "\\" and i + 1 < len(path):
            cur += path[i + 1]
            i += 2
            continue
        if c == ".":
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    return parts


def apply_event_fields(event: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Keep only the given (dotted) fields of a client event (filter `event_fields`)."""
    out: dict[str, Any] = {}
    for path in paths:
        keys = _split_field(path)
        src: Any = event
        for k in keys:
            if not isinstance(src, dict) or k not in src:
                break
            src = src[k]
        else:
            dst = out
            for k in keys[:-1]:
                nxt = dst.get(k)
                if not isinstance(nxt, dict):
                    nxt = dst[k] = {}
                dst = nxt
            dst[keys[-1]] = src
    return out
