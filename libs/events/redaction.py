"""The redaction algorithm, per room version (spec: "Redactions")."""
from __future__ import annotations

from typing import Any, Mapping

from .room_versions import RoomVersion

_TOP_LEVEL_ALWAYS = frozenset(
    {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "auth_events", "origin_server_ts",
    }
)
# Dropped from the protected list by room version 11 (MSC2176).
_TOP_LEVEL_PRE_V11 = frozenset({"origin", "membership", "prev_state"})


def _kept_content_keys(event_type: str, version: RoomVersion) -> frozenset[str] | None:
    """The content keys a redaction keeps; None means keep all content."""
    if event_type == "m.room.member":
        keys = {"membership"}
        if version.restricted_join_rule_fix:
            keys.add("join_authorised_via_users_server")
        return frozenset(keys)
    if event_type == "m.room.create":
        return None if version.updated_redaction_rules else frozenset({"creator"})
    if event_type == "m.room.join_rules":
        return frozenset({"join_rule", "allow"} if version.restricted_join_rule else {"join_rule"})
    if event_type == "m.room.power_levels":
        keys = {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
        if version.updated_redaction_rules:
            keys.add("invite")
        return frozenset(keys)
    if event_type == "m.room.aliases" and version.special_case_aliases_auth:
        return frozenset({"aliases"})
    if event_type == "m.room.history_visibility":
        return frozenset({"history_visibility"})
    if event_type == "m.room.redaction" and version.updated_redaction_rules:
        return frozenset({"redacts"})
    return frozenset()


def redact(event: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """Return the redacted form of a PDU (a new dict; the input is untouched)."""
    allowed = _TOP_LEVEL_ALWAYS if version.updated_redaction_rules else _TOP_LEVEL_ALWAYS | _TOP_LEVEL_PRE_V11
    out = {k: v for k, v in event.items() if k in allowed}
    etype = event.get("type")
    if version.hydra and etype == "m.room.create":
        # v12 create events have no room_id (it is derived from their hash), so a
        # stray one is not protected and cannot change the event ID.
        out.pop("room_id", None)
    content = event.get("content")
    if not isinstance(content, dict):
        content = {}
    kept = _kept_content_keys(etype if isinstance(etype, str) else "", version)
    if kept is None:
        new_content = dict(content)
    else:
        new_content = {k: v for k, v in content.items() if k in kept}
    if etype == "m.room.member" and version.updated_redaction_rules:
        tpi = content.get("third_party_invite")
        if isinstance(tpi, dict):
            # v11 keeps third_party_invite.signed; like Synapse (whose event IDs everyone
            # computes against) an object without `signed` is kept as {}.
            new_content["third_party_invite"] = {"signed": tpi["signed"]} if "signed" in tpi else {}
    out["content"] = new_content
    return out
