"""Build new PDUs: the roomserver calls `build_event` to create and sign its events."""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

from .event import Event
from .limits import check_pdu_format
from .room_versions import EventFormat, RoomVersion
from .signing import SigningKey, hash_and_sign
from .unpadded_base64 import encode_base64


def build_event(
    version: RoomVersion,
    *,
    type: str,
    sender: str,
    room_id: str | None,
    content: dict[str, Any],
    prev_events: Sequence[str],
    auth_events: Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: SigningKey,
    state_key: str | None = None,
    redacts: str | None = None,
    event_id: str | None = None,
    reference_hashes: dict[str, dict[str, str]] | None = None,
    unsigned: dict[str, Any] | None = None,
) -> Event:
    """A new, hashed and signed event, format-checked for `version`.

    * `room_id` must be None exactly for a room-version-12 create event (its room ID is
      derived from its hash: read it from the returned `Event.room_id`).
    * Room versions 1/2 need `event_id` (``$local:server``) and refer to other events as
      ``[id, hashes]``; give those hashes in `reference_hashes` (defaults to ``{}``).
    * `redacts` goes top-level before v11 and into content from v11 on.

    Raises limits.EventFormatError for a malformed result.
    """
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": dict(content),
        "depth": depth,
        "origin_server_ts": origin_server_ts,
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if version.event_format is EventFormat.V1:
        if event_id is None:
            raise ValueError("room versions 1 and 2 need an event_id")
        pdu["event_id"] = event_id
        refs = reference_hashes or {}
        pdu["prev_events"] = [[e, refs.get(e, {})] for e in prev_events]
        pdu["auth_events"] = [[e, refs.get(e, {})] for e in auth_events]
    else:
        pdu["prev_events"] = list(prev_events)
        pdu["auth_events"] = list(auth_events)
    if not version.updated_redaction_rules:
        # Servers before v11 put `origin` on every event; harmless and expected.
        pdu["origin"] = server_name
    if redacts is not None:
        if version.updated_redaction_rules:
            pdu["content"]["redacts"] = redacts
        # Kept top-level too: older clients and servers read it there.
        pdu["redacts"] = redacts
    check_pdu_format(pdu, version)
    # The signed bytes are the reference hash input (no event_id, no unsigned yet):
    # the event ID comes from them without a second redaction and encoding.
    signed = hash_and_sign(pdu, version, server_name, signing_key)
    if version.event_format is EventFormat.V1:
        eid = event_id
    else:
        eid = "$" + encode_base64(hashlib.sha256(signed).digest(), urlsafe=version.event_format is EventFormat.V4)
    if unsigned:
        pdu["unsigned"] = dict(unsigned)
    return Event(pdu, version, eid)
