"""Serialise PDUs into the Client-Server API's event format."""
from __future__ import annotations

from typing import Any

_CLIENT_KEYS = ("event_id", "type", "room_id", "sender", "state_key", "content", "origin_server_ts", "redacts")


def to_client_event(
    pdu: dict[str, Any],
    *,
    now_ms: int | None = None,
    unsigned: dict[str, Any] | None = None,
    include_room_id: bool = True,
) -> dict[str, Any]:
    """The client form of an event: federation-only keys (auth_events, prev_events,
    hashes, signatures, depth, origin) dropped; `unsigned.age` computed from `now_ms`.

    `unsigned` is merged over the PDU's own unsigned (e.g. transaction_id,
    prev_content, redacted_because)."""
    out: dict[str, Any] = {k: pdu[k] for k in _CLIENT_KEYS if k in pdu}
    if not include_room_id:
        out.pop("room_id", None)
    u: dict[str, Any] = {}
    own = pdu.get("unsigned")
    if isinstance(own, dict):
        u.update({k: v for k, v in own.items() if k not in ("age_ts",)})
    if unsigned:
        u.update(unsigned)
    ts = pdu.get("origin_server_ts")
    if now_ms is not None and isinstance(ts, int):
        u["age"] = max(0, now_ms - ts)
    if u:
        out["unsigned"] = u
    return out


def strip_to_state(pdu: dict[str, Any]) -> dict[str, Any]:
    """Stripped state (invite_state / knock_state): type, state_key, sender, content."""
    return {k: pdu[k] for k in ("type", "state_key", "sender", "content") if k in pdu}
