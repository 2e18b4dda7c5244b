"""PDU format checks (spec: "Size limits" and the PDU schemas of each room version).

`check_pdu_format` is what the federation and client edges run before an event is
hashed, signed, auth-checked or stored. Failures raise `EventFormatError` with an
errcode (M_BAD_JSON for shape, M_TOO_LARGE for size), never anything else.
"""
from __future__ import annotations

from typing import Any, Mapping

from .canonical_json import CanonicalJSONError, encode_canonical_json
from .room_versions import EventFormat, RoomVersion

MAX_PDU_BYTES = 65536
MAX_ID_BYTES = 255  # user/room/event IDs, type, state_key (UTF-8 bytes)
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
MAX_DEPTH = 2**63 - 1


class EventFormatError(ValueError):
    def __init__(self, message: str, errcode: str = "M_BAD_JSON") -> None:
        super().__init__(message)
        self.errcode = errcode


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_str(pdu: Mapping[str, Any], key: str, *, required: bool = True, sigil: str | None = None) -> None:
    if key not in pdu:
        if required:
            raise EventFormatError(f"missing field {key!r}")
        return
    v = pdu[key]
    if not isinstance(v, str):
        raise EventFormatError(f"{key!r} must be a string")
    if len(v.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise EventFormatError(f"{key!r} is longer than {MAX_ID_BYTES} bytes", "M_TOO_LARGE")
    # User IDs always have a server part; v12 room IDs (a hash) do not; event IDs vary.
    if sigil is not None and not (v.startswith(sigil) and (":" in v or sigil != "@")):
        raise EventFormatError(f"{key!r} is not a valid identifier")


def _check_refs(pdu: Mapping[str, Any], key: str, limit: int, version: RoomVersion) -> None:
    refs = pdu.get(key)
    if not isinstance(refs, list):
        raise EventFormatError(f"{key!r} must be a list")
    if len(refs) > limit:
        raise EventFormatError(f"more than {limit} {key}", "M_TOO_LARGE")
    for ref in refs:
        if version.event_format is EventFormat.V1:
            # [event_id, {"sha256": "..."}]
            if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str) and isinstance(ref[1], dict)):
                raise EventFormatError(f"{key!r} entries must be [event_id, hashes] pairs")
            eid = ref[0]
        else:
            if not isinstance(ref, str):
                raise EventFormatError(f"{key!r} entries must be event IDs")
            eid = ref
        if not eid.startswith("$") or len(eid.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise EventFormatError(f"bad event ID in {key!r}")


def check_pdu_format(pdu: Any, version: RoomVersion, *, check_size: bool = True) -> None:
    """Raise EventFormatError unless `pdu` is well-formed for `version`.

    Checks: field presence and types; IDs, `type` and `state_key` at most 255 bytes;
    <= 20 prev_events and <= 10 auth_events; depth and origin_server_ts in
    [0, 2**63-1]; content/hashes/signatures/unsigned are objects; in strict room
    versions (v6+) the whole event must be canonical JSON; the event is at most
    65536 bytes in canonical form (what the spec measures)."""
    if not isinstance(pdu, dict):
        raise EventFormatError("event must be a JSON object")
    _check_str(pdu, "type")
    _check_str(pdu, "sender", sigil="@")
    is_v12_create = version.hydra and pdu.get("type") == "m.room.create"
    if is_v12_create:
        if "room_id" in pdu:
            raise EventFormatError("room version 12 create events have no room_id")
    else:
        _check_str(pdu, "room_id", sigil="!")
    _check_str(pdu, "state_key", required=False)
    if version.event_format is EventFormat.V1:
        _check_str(pdu, "event_id", sigil="$")
    elif "event_id" in pdu:
        _check_str(pdu, "event_id", sigil="$")
    if not isinstance(pdu.get("content"), dict):
        raise EventFormatError("'content' must be an object")
    for key in ("hashes", "signatures", "unsigned"):
        if key in pdu and not isinstance(pdu[key], dict):
            raise EventFormatError(f"{key!r} must be an object")
    for key in ("depth", "origin_server_ts"):
        v = pdu.get(key)
        if not _is_int(v):
            raise EventFormatError(f"{key!r} must be an integer")
        if not 0 <= v <= MAX_DEPTH:
            raise EventFormatError(f"{key!r} out of range")
    _check_refs(pdu, "prev_events", MAX_PREV_EVENTS, version)
    _check_refs(pdu, "auth_events", MAX_AUTH_EVENTS, version)
    if "redacts" in pdu and not isinstance(pdu["redacts"], str):
        raise EventFormatError("'redacts' must be a string")
    if check_size:
        check_event_size(pdu, version)


def check_event_size(pdu: Mapping[str, Any], version: RoomVersion) -> int:
    """Return the canonical size in bytes; raise if over 65536 or not encodable."""
    try:
        size = len(encode_canonical_json(pdu, strict=version.strict_canonicaljson))
    except CanonicalJSONError as e:
        raise EventFormatError(f"event is not canonical JSON: {e}") from None
    if size > MAX_PDU_BYTES:
        raise EventFormatError(f"event is {size} bytes, more than {MAX_PDU_BYTES}", "M_TOO_LARGE")
    return size
