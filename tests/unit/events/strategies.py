"""Hypothesis strategies for JSON values and PDUs of every room version (test-only)."""
from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SAFE_INT = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
# Text without lone surrogates (those are not representable in UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
KEYS = st.one_of(TEXT, st.sampled_from(["a", "b", "body", "é", "日", "\x00", "A", "aa", "signed"]))

JSON_LEAF = st.one_of(st.none(), st.booleans(), SAFE_INT, TEXT)
JSON = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)),
    max_leaves=20,
)

SERVERS = st.sampled_from(["a.example", "b.example:8448", "c.example", "[::1]:80"])
LOCAL = st.sampled_from(["alice", "bob", "x", "u-1"])


@st.composite
def user_id(draw: Any) -> str:
    return f"@{draw(LOCAL)}:{draw(SERVERS)}"


@st.composite
def extra(draw: Any) -> dict[str, Any]:
    # Random keys, plus the names redaction treats specially.
    d = draw(st.dictionaries(KEYS, JSON, max_size=3))
    for k in draw(st.lists(st.sampled_from(
        ["membership", "creator", "join_rule", "allow", "ban", "events", "events_default", "kick",
         "redact", "state_default", "users", "users_default", "invite", "notifications", "aliases",
         "history_visibility", "redacts", "join_authorised_via_users_server", "third_party_invite",
         "additional_creators", "room_version", "m.federate", "predecessor", "body"]), max_size=4)):
        d[k] = draw(JSON)
    return d


EVENT_TYPES = [
    "m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels", "m.room.aliases",
    "m.room.history_visibility", "m.room.redaction", "m.room.message", "m.room.name", "org.example.custom",
]


@st.composite
def content_for(draw: Any, etype: str) -> dict[str, Any]:
    c = draw(extra())
    if etype == "m.room.member":
        c["membership"] = draw(st.sampled_from(["join", "invite", "leave", "ban", "knock"]))
        if draw(st.booleans()):
            c["join_authorised_via_users_server"] = draw(user_id())
        if draw(st.booleans()):
            tpi: dict[str, Any] = {"display_name": draw(TEXT)}
            if draw(st.booleans()):
                tpi["signed"] = {"mxid": draw(user_id()), "token": draw(TEXT),
                                 "signatures": {"id.example": {"ed25519:0": "abc"}}}
            c["third_party_invite"] = tpi
    elif etype == "m.room.create":
        if draw(st.booleans()):
            c["creator"] = draw(user_id())
        if draw(st.booleans()):
            c["additional_creators"] = draw(st.lists(user_id(), max_size=2))
    elif etype == "m.room.join_rules":
        c["join_rule"] = draw(st.sampled_from(["public", "invite", "knock", "restricted", "knock_restricted"]))
        if draw(st.booleans()):
            c["allow"] = [{"type": "m.room_membership", "room_id": "!space:a.example"}]
    elif etype == "m.room.power_levels":
        c.update({"ban": 50, "kick": 50, "redact": 50, "invite": draw(SAFE_INT), "users": {draw(user_id()): 100},
                  "events": {"m.room.name": 50}, "notifications": {"room": 50}, "users_default": 0})
    elif etype == "m.room.aliases":
        c["aliases"] = ["#a:a.example"]
    elif etype == "m.room.history_visibility":
        c["history_visibility"] = draw(st.sampled_from(["shared", "joined", "invited", "world_readable"]))
    elif etype == "m.room.redaction" and draw(st.booleans()):
        c["redacts"] = "$target"
    return c


@st.composite
def pdu(draw: Any, version: int) -> dict[str, Any]:
    """A PDU as sent over federation in room version `version` (no hashes/signatures)."""
    etype = draw(st.sampled_from(EVENT_TYPES))
    sender = draw(user_id())
    ev: dict[str, Any] = {
        "type": etype,
        "sender": sender,
        "room_id": "!room:" + draw(SERVERS),
        "content": draw(content_for(etype)),
        "depth": draw(st.integers(min_value=0, max_value=2**53 - 1)),
        "origin_server_ts": draw(st.integers(min_value=0, max_value=2**53 - 1)),
    }
    if version <= 2:
        ev["event_id"] = "$" + draw(st.sampled_from(["e1", "abc", "x_y"])) + ":" + draw(SERVERS)
        ev["prev_events"] = [["$p:a.example", {"sha256": "aGFzaA"}]]
        ev["auth_events"] = [["$c:a.example", {"sha256": "aGFzaA"}]]
    else:
        ev["prev_events"] = ["$" + "A" * 43]
        ev["auth_events"] = draw(st.lists(st.sampled_from(["$" + "B" * 43, "$" + "C" * 43]), max_size=2))
    if etype in ("m.room.member",):
        ev["state_key"] = draw(user_id())
    elif etype != "m.room.message" and etype != "m.room.redaction" and (etype != "org.example.custom" or draw(st.booleans())):
        ev["state_key"] = ""
    if etype == "m.room.redaction" and draw(st.booleans()):
        ev["redacts"] = "$target:a.example"
    if etype == "m.room.create" and version >= 12:  # Synapse refuses v12 creates with a room_id
        del ev["room_id"]
    if version < 11 and draw(st.booleans()):
        ev["origin"] = ev["sender"].split(":", 1)[1]
    for k, v in draw(st.dictionaries(st.sampled_from(["membership", "prev_state", "origin", "x_extra", "foo"]), JSON, max_size=2)).items():
        ev.setdefault(k, v)
    if draw(st.booleans()):
        ev["unsigned"] = {"age": draw(st.integers(min_value=0, max_value=10**6))}
    return ev
