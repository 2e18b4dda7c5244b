"""A typed, read-only view over a PDU (the event as sent over federation)."""
from __future__ import annotations

from typing import Any

from .hashes import compute_event_id
from .room_versions import EventFormat, RoomVersion


def reference_ids(refs: Any) -> list[str]:
    """Event IDs of a `prev_events`/`auth_events` list: v1/v2 list references as
    [event_id, {"sha256": ...}] pairs, v3+ as bare IDs; anything malformed is skipped."""
    out: list[str] = []
    if isinstance(refs, list):
        for r in refs:
            if isinstance(r, str):
                out.append(r)
            elif isinstance(r, list) and r and isinstance(r[0], str):
                out.append(r[0])
    return out


class Event:
    """An event in a given room version. `pdu` is kept as-is; accessors never raise
    on malformed fields (validation is `limits.check_pdu_format`'s job)."""

    __slots__ = ("pdu", "room_version", "_event_id", "_prev", "_auth", "_room_id", "_auth_full")

    def __init__(self, pdu: dict[str, Any], room_version: RoomVersion, event_id: str | None = None):
        self.pdu = pdu
        self.room_version = room_version
        self._event_id = event_id
        self._prev: list[str] | None = None
        self._auth: list[str] | None = None
        self._room_id: str | None = None
        self._auth_full: list[str] | None = None

    @property
    def event_id(self) -> str:
        if self._event_id is None:
            self._event_id = compute_event_id(self.pdu, self.room_version)
        return self._event_id

    @property
    def room_id(self) -> str:
        if self._room_id is None:
            rid = self.pdu.get("room_id")
            if isinstance(rid, str):
                self._room_id = rid
            elif self.room_version.hydra and self.type == "m.room.create" and self.state_key == "":
                # v12 create events carry no room_id: it is derived from their own hash.
                self._room_id = "!" + self.event_id[1:]
            else:
                self._room_id = ""
        return self._room_id

    @property
    def type(self) -> str:
        t = self.pdu.get("type")
        return t if isinstance(t, str) else ""

    @property
    def sender(self) -> str:
        s = self.pdu.get("sender")
        return s if isinstance(s, str) else ""

    @property
    def state_key(self) -> str | None:
        sk = self.pdu.get("state_key")
        return sk if isinstance(sk, str) else None

    def is_state(self) -> bool:
        return "state_key" in self.pdu and isinstance(self.pdu["state_key"], str)

    @property
    def state_tuple(self) -> tuple[str, str]:
        return (self.type, self.state_key or "")

    @property
    def content(self) -> dict[str, Any]:
        c = self.pdu.get("content")
        return c if isinstance(c, dict) else {}

    @property
    def depth(self) -> int:
        d = self.pdu.get("depth")
        return d if isinstance(d, int) and not isinstance(d, bool) else 0

    @property
    def origin_server_ts(self) -> int:
        t = self.pdu.get("origin_server_ts")
        return t if isinstance(t, int) and not isinstance(t, bool) else 0

    @property
    def prev_event_ids(self) -> list[str]:
        if self._prev is None:
            self._prev = reference_ids(self.pdu.get("prev_events"))
        return self._prev

    @property
    def auth_event_ids(self) -> list[str]:
        if self._auth is None:
            self._auth = reference_ids(self.pdu.get("auth_events"))
        return self._auth

    @property
    def full_auth_event_ids(self) -> list[str]:
        """The events that authorise this one: `auth_event_ids`, plus in room v12 the
        create event (its ID is implied by the room ID and never listed). Cached: the
        auth DAG walks of state resolution read it once per event per walk."""
        if self._auth_full is None:
            ids = self.auth_event_ids
            if self.room_version.hydra and self.type != "m.room.create":
                rid = self.room_id
                if rid.startswith("!"):
                    create_id = "$" + rid[1:]
                    if create_id not in ids:
                        ids = [*ids, create_id]
            self._auth_full = ids
        return self._auth_full

    @property
    def redacts(self) -> str | None:
        # v11 moved `redacts` into content; accept both so older rooms work.
        if self.room_version.updated_redaction_rules:
            r = self.content.get("redacts", self.pdu.get("redacts"))
        else:
            r = self.pdu.get("redacts")
        return r if isinstance(r, str) else None

    @property
    def membership(self) -> str | None:
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def origin(self) -> str:
        return self.sender.split(":", 1)[1] if ":" in self.sender else ""

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} {self.state_key!r}>"

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id


def is_v1_format(version: RoomVersion) -> bool:
    return version.event_format is EventFormat.V1
