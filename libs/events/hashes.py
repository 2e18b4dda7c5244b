"""Content hashes, reference hashes, event IDs and (room v12) room IDs."""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from .canonical_json import CanonicalJSONError, encode_canonical_json
from .redaction import redact
from .room_versions import EventFormat, RoomVersion
from .unpadded_base64 import decode_base64, encode_base64


def _strict(version: RoomVersion | None) -> bool:
    # v1–v5 events may carry floats / big integers: hash them as the origin did.
    return version is None or version.strict_canonicaljson


def compute_content_hash(event: Mapping[str, Any], version: RoomVersion | None = None) -> bytes:
    """SHA-256 over the canonical event without unsigned, signatures and hashes."""
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped, strict=_strict(version))).digest()


def content_hash_b64(event: Mapping[str, Any], version: RoomVersion | None = None) -> str:
    return encode_base64(compute_content_hash(event, version))


def check_content_hash(event: Mapping[str, Any], version: RoomVersion | None = None) -> bool:
    hashes = event.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        expected = decode_base64(hashes["sha256"])
    except ValueError:
        return False
    try:
        return expected == compute_content_hash(event, version)
    except CanonicalJSONError:
        return False


def _reference_form(event: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    pruned = redact(event, version)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    if version.event_format is not EventFormat.V1:
        # v3+ events carry no event_id on the wire; a local copy may.
        pruned.pop("event_id", None)
    return pruned


def compute_reference_hash(event: Mapping[str, Any], version: RoomVersion) -> bytes:
    form = _reference_form(event, version)
    return hashlib.sha256(encode_canonical_json(form, strict=_strict(version))).digest()


def compute_event_id(event: Mapping[str, Any], version: RoomVersion) -> str:
    """The event's ID: for v1/v2 the `event_id` it carries, otherwise from its reference hash."""
    if version.event_format is EventFormat.V1:
        eid = event.get("event_id")
        if not isinstance(eid, str) or not eid.startswith("$"):
            raise ValueError("room versions 1 and 2 need an event_id ('$...') on the event")
        return eid
    digest = compute_reference_hash(event, version)
    return "$" + encode_base64(digest, urlsafe=version.event_format is EventFormat.V4)


def compute_room_id_v12(create_event: Mapping[str, Any], version: RoomVersion) -> str:
    """Room v12: the room ID is '!' + the create event's reference hash (URL-safe)."""
    return "!" + compute_event_id(create_event, version)[1:]
