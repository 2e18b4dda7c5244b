"""Authorization rules for room versions 1–12 (spec "Authorisation rules" of each
room version page).

Two entry points:

* `check_event_auth(event, auth_events)` — the full check of an event against the
  auth events it cites: the state-independent rules (listed auth events supplied, no
  duplicates, only expected types, same room, none rejected, create present) and then
  the state-dependent rules.
* `check_auth_rules(event, auth_state)` — only the state-dependent rules, against a
  state map (soft-fail checks against current state; iterative auth checks of state
  resolution).

Both raise `AuthError` and never anything else on malformed input. Pure: no I/O.

Room version 12: the create event is never listed in `auth_events`; callers of
`check_event_auth` pass it among `auth_events` anyway (it is recognised by its ID,
"$" + room_id[1:]) and callers of `check_auth_rules` put it in the state map under
("m.room.create", "") as for every other version.

Signatures are verified elsewhere (libs.events signing); the rule "the event must be
signed by the authorising user's server" (v8+ restricted joins) is checked here as the
presence of that server's signature block, on the assumption that every signature
present has been verified.
"""
from __future__ import annotations

import math
import re
from collections.abc import Container, Iterable, Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from .canonical_json import CanonicalJSONError, encode_canonical_json
from .event import Event
from .room_versions import ROOM_VERSIONS, EventFormat, RoomVersion
from .unpadded_base64 import Base64Error, decode_base64

__all__ = [
    "AuthError", "check_event_auth", "check_auth_rules", "auth_types_for_event",
    "get_user_power_level", "get_named_level", "get_power_level_for_event_type",
    "get_room_creators", "is_power_event", "is_valid_user_id", "CREATE_KEY",
    "POWER_LEVELS_KEY", "JOIN_RULES_KEY",
]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

CREATE_KEY: tuple[str, str] = (CREATE, "")
POWER_LEVELS_KEY: tuple[str, str] = (POWER_LEVELS, "")
JOIN_RULES_KEY: tuple[str, str] = (JOIN_RULES, "")

AUTHORISING_USER = "join_authorised_via_users_server"

# (name, default) of the top-level integer levels of m.room.power_levels.
_NAMED_LEVELS: tuple[tuple[str, int], ...] = (
    ("users_default", 0), ("events_default", 0), ("state_default", 50),
    ("ban", 50), ("redact", 50), ("kick", 50), ("invite", 0),
)
_NAMED_DEFAULTS: dict[str, int] = dict(_NAMED_LEVELS)

_INF = float("inf")
# Pre-v10 string power levels: optional whitespace, one sign, base-10 ASCII digits.
_STRINGY_INT = re.compile(r"\s*([+-]?)([0-9]+)\s*", re.ASCII)
# Stringy levels longer than this saturate: far outside any real level, and int() of
# thousands of digits is slow (and refused by Python beyond 4300 digits).
_MAX_DIGITS = 30
_SATURATED = 10**_MAX_DIGITS
# server_name = hostname | IPv4 | "[" IPv6 "]", optional ":port" (spec appendix).
_SERVER_NAME = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(?::[0-9]{1,5})?", re.ASCII
)


class AuthError(Exception):
    """The event is not allowed by the authorization rules."""

    errcode = "M_FORBIDDEN"

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- small helpers


def _event_id(ev: Event) -> str:
    # An ID that cannot be computed (v1/v2 without event_id, v3+ not hashable) means
    # the event cannot be referenced, so it cannot authorise anything.
    try:
        return ev.event_id
    except ValueError:
        raise AuthError("event ID cannot be determined") from None


def _domain(identifier: str) -> str:
    # Everything after the first colon: "@user:example.org:8448" -> "example.org:8448".
    idx = identifier.find(":")
    return identifier[idx + 1:] if idx >= 0 else ""


def is_valid_user_id(user_id: object) -> bool:
    """`@localpart:server_name`, at most 255 bytes (historical localparts allowed)."""
    if not isinstance(user_id, str) or len(user_id) < 4 or user_id[0] != "@":
        return False
    idx = user_id.find(":")
    if idx < 2:
        return False
    if len(user_id.encode("utf-8", "surrogatepass")) > 255:
        return False
    return _SERVER_NAME.fullmatch(user_id, idx + 1) is not None


def _to_level(value: object, rv: RoomVersion) -> int | None:
    """A power level value as an int, or None if this room version cannot read it.

    v10+: only real integers. Earlier: integers, numeric strings (" +050 ") and, where
    canonical JSON is not enforced (v1–v5), floats truncated toward zero."""
    t = type(value)
    if t is int:
        return value  # type: ignore[return-value]
    if rv.enforce_int_power_levels:
        return None
    if t is str:
        m = _STRINGY_INT.fullmatch(value)  # type: ignore[arg-type]
        if m is None:
            return None
        digits = m.group(2).lstrip("0") or "0"
        n = int(digits) if len(digits) <= _MAX_DIGITS else _SATURATED
        return -n if m.group(1) == "-" else n
    if t is float and not rv.strict_canonicaljson and math.isfinite(value):  # type: ignore[arg-type]
        return int(value)  # type: ignore[arg-type]
    return None


def _membership_of(auth_state: Mapping[tuple[str, str], Event], user_id: str) -> str | None:
    ev = auth_state.get((MEMBER, user_id))
    return ev.membership if ev is not None else None


def get_room_creators(create: Event) -> frozenset[str]:
    """The room creators: the create event's sender plus (v12) `additional_creators`;
    before v11, `content.creator`."""
    rv = create.room_version
    if not rv.implicit_room_creator:
        creator = create.content.get("creator")
        return frozenset((creator,)) if isinstance(creator, str) else frozenset()
    if not rv.hydra:
        return frozenset((create.sender,))
    extra = create.content.get("additional_creators")
    if isinstance(extra, list):
        return frozenset([create.sender, *(u for u in extra if isinstance(u, str))])
    return frozenset((create.sender,))


# ---------------------------------------------------------------- power levels


class _Levels:
    """Power levels of one state map, parsed once per check."""

    __slots__ = ("rv", "content", "has_pl", "creators", "implicit_creator", "_users")

    def __init__(self, rv: RoomVersion, auth_state: Mapping[tuple[str, str], Event]):
        self.rv = rv
        pl = auth_state.get(POWER_LEVELS_KEY)
        self.has_pl = pl is not None
        self.content: dict[str, Any] = pl.content if pl is not None else {}
        create = auth_state.get(CREATE_KEY)
        # v12: creators have infinite power; v1–v11 without power levels: creator has 100.
        self.creators: frozenset[str] = (
            get_room_creators(create) if create is not None and rv.hydra else frozenset()
        )
        self.implicit_creator: frozenset[str] = (
            get_room_creators(create)
            if create is not None and not rv.hydra and pl is None
            else frozenset()
        )
        self._users: dict[str, int | float] = {}

    def named(self, name: str) -> int:
        default = _NAMED_DEFAULTS[name]
        if not self.has_pl:
            return default
        v = self.content.get(name)
        if v is None:
            return default
        lvl = _to_level(v, self.rv)
        return default if lvl is None else lvl

    def user(self, user_id: str) -> int | float:
        cached = self._users.get(user_id)
        if cached is not None:
            return cached
        if user_id in self.creators:
            level: int | float = _INF
        elif self.has_pl:
            users = self.content.get("users")
            lvl = None
            if isinstance(users, dict):
                raw = users.get(user_id)
                if raw is not None:
                    lvl = _to_level(raw, self.rv)
            level = self.named("users_default") if lvl is None else lvl
        else:
            level = 100 if user_id in self.implicit_creator else 0
        self._users[user_id] = level
        return level

    def for_event(self, event_type: str, is_state: bool) -> int:
        events = self.content.get("events")
        if isinstance(events, dict):
            raw = events.get(event_type)
            if raw is not None:
                lvl = _to_level(raw, self.rv)
                if lvl is not None:
                    return lvl
        return self.named("state_default" if is_state else "events_default")


def get_user_power_level(user_id: str, auth_state: Mapping[tuple[str, str], Event]) -> int | float:
    """The user's power level in the given state; float('inf') for v12 creators."""
    create = auth_state.get(CREATE_KEY)
    pl = auth_state.get(POWER_LEVELS_KEY)
    ref = create if create is not None else pl
    if ref is None:
        return 0
    return _Levels(ref.room_version, auth_state).user(user_id)


def get_named_level(auth_state: Mapping[tuple[str, str], Event], name: str) -> int:
    """`ban`, `kick`, `redact`, `invite`, `users_default`, `events_default` or
    `state_default`, with the spec's defaults."""
    pl = auth_state.get(POWER_LEVELS_KEY)
    if pl is None:
        return _NAMED_DEFAULTS[name]
    return _Levels(pl.room_version, auth_state).named(name)


def get_power_level_for_event_type(
    event_type: str, is_state: bool, auth_state: Mapping[tuple[str, str], Event]
) -> int:
    """The *required power level* to send an event of this type."""
    pl = auth_state.get(POWER_LEVELS_KEY)
    if pl is None:
        return 50 if is_state else 0
    return _Levels(pl.room_version, auth_state).for_event(event_type, is_state)


def is_power_event(event: Event) -> bool:
    """Spec (state resolution v2) definition: a state event of type m.room.power_levels
    or m.room.join_rules, or a member event whose membership is leave or ban and whose
    sender is not its state_key (a kick or a ban)."""
    if not event.is_state():
        return False
    t = event.type
    if t == POWER_LEVELS or t == JOIN_RULES:
        return True
    if t == MEMBER:
        m = event.membership
        return (m == "leave" or m == "ban") and event.sender != event.state_key
    return False


# ---------------------------------------------------------------- auth events selection


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: dict[str, Any],
) -> set[tuple[str, str]]:
    """The (type, state_key) pairs a new event may cite as auth events (server-server
    spec, "Auth events selection")."""
    if event_type == CREATE:
        return set()
    types = {POWER_LEVELS_KEY, (MEMBER, sender)}
    if not room_version.hydra:
        types.add(CREATE_KEY)
    if event_type == MEMBER and isinstance(content, dict):
        membership = content.get("membership")
        if state_key is not None:
            types.add((MEMBER, state_key))
        if membership in ("join", "invite", "knock"):
            types.add(JOIN_RULES_KEY)
        if membership == "invite":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict):
                signed = tpi.get("signed")
                if isinstance(signed, dict) and isinstance(signed.get("token"), str):
                    types.add((THIRD_PARTY_INVITE, signed["token"]))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get(AUTHORISING_USER)
            if isinstance(authoriser, str):
                types.add((MEMBER, authoriser))
    return types


# ---------------------------------------------------------------- full check


def check_event_auth(
    event: Event,
    auth_events: list[Event],
    *,
    rejected_event_ids: Container[str] = frozenset(),
) -> None:
    """Check `event` against the auth events it lists. `auth_events` must contain every
    event the PDU lists in `auth_events` (extra events are ignored; in v12 the room's
    create event must be among them although it is not listed). Events whose IDs are in
    `rejected_event_ids` were themselves rejected. Raises AuthError."""
    rv = event.room_version
    if event.type == CREATE:
        _check_create(event)
        return

    by_id: dict[str, Event] = {}
    for ae in auth_events:
        by_id[_event_id(ae)] = ae
    room_id = event.room_id
    expected = auth_types_for_event(rv, event.type, event.sender, event.state_key, event.content)
    state: dict[tuple[str, str], Event] = {}
    for eid in event.auth_event_ids:
        ae = by_id.get(eid)
        if ae is None:
            raise AuthError(f"auth event {eid} was not supplied")
        if not ae.is_state():
            raise AuthError(f"auth event {eid} is not a state event")
        if ae.room_id != room_id:
            raise AuthError(f"auth event {eid} belongs to another room")
        key = (ae.type, ae.pdu["state_key"])
        if key in state:
            raise AuthError(f"duplicate auth events for {key}")
        if key not in expected:
            raise AuthError(f"unexpected auth event {eid} for {key}")
        if eid in rejected_event_ids:
            raise AuthError(f"auth event {eid} was rejected")
        state[key] = ae

    if rv.hydra:
        # Rule 2: the room ID is the create event's ID with a "!" sigil.
        if not room_id.startswith("!"):
            raise AuthError("room ID is not derived from a create event")
        create_id = "$" + room_id[1:]
        create = by_id.get(create_id)
        if create is None or create.type != CREATE or create.state_key != "":
            raise AuthError("the room's create event was not supplied")
        if create_id in rejected_event_ids:
            raise AuthError("the room's create event was rejected")
        state[CREATE_KEY] = create
    elif CREATE_KEY not in state:
        raise AuthError("no m.room.create event among the auth events")

    check_auth_rules(event, state)


# ---------------------------------------------------------------- state-dependent rules


def check_auth_rules(event: Event, auth_state: Mapping[tuple[str, str], Event]) -> None:
    """The state-dependent authorization rules of `event`'s room version, against
    `auth_state` (which must hold the create event under ("m.room.create", ""))."""
    rv = event.room_version
    etype = event.type
    if etype == CREATE:
        _check_create(event)
        return

    create = auth_state.get(CREATE_KEY)
    if create is None:
        raise AuthError("no create event in the auth state")
    sender = event.sender
    if rv.hydra and event.room_id != "!" + _event_id(create)[1:]:
        raise AuthError("room ID does not match the create event")

    if create.content.get("m.federate", True) is False and _domain(sender) != _domain(create.sender):
        raise AuthError("room is not federated and the sender is from another server")

    if etype == ALIASES and rv.special_case_aliases_auth:
        sk = event.state_key
        if sk is None:
            raise AuthError("m.room.aliases must be a state event")
        if sk != _domain(sender):
            raise AuthError("m.room.aliases state_key does not match the sender's server")
        return

    levels = _Levels(rv, auth_state)
    if etype == MEMBER:
        _check_member(event, auth_state, levels, create)
        return

    if _membership_of(auth_state, sender) != "join":
        raise AuthError(f"{sender} is not joined to the room")

    if etype == THIRD_PARTY_INVITE:
        if levels.user(sender) >= levels.named("invite"):
            return
        raise AuthError("sender may not invite")

    is_state = event.is_state()
    sender_level = levels.user(sender)
    if levels.for_event(etype, is_state) > sender_level:
        raise AuthError(f"sender's power level is too low to send {etype}")

    sk = event.state_key
    if sk is not None and sk.startswith("@") and sk != sender:
        raise AuthError("state_key is another user's ID")

    if etype == POWER_LEVELS:
        _check_power_levels(event, auth_state, levels, create)
        return

    # v1/v2 only (the only versions whose event IDs carry a domain).
    if etype == REDACTION and rv.event_format is EventFormat.V1:
        if sender_level >= levels.named("redact"):
            return
        redacts = event.redacts
        if redacts is not None and ":" in redacts and _domain(redacts) == _domain(_event_id(event)):
            return
        raise AuthError("sender may not redact this event")


def _check_create(event: Event) -> None:
    rv = event.room_version
    pdu = event.pdu
    if pdu.get("prev_events"):
        raise AuthError("create event has prev_events")
    if rv.hydra:
        if "room_id" in pdu:
            raise AuthError("v12 create event must not have a room_id")
    else:
        room_id = pdu.get("room_id")
        if not isinstance(room_id, str) or ":" not in room_id or ":" not in event.sender:
            raise AuthError("create event room_id or sender has no server name")
        if _domain(room_id) != _domain(event.sender):
            raise AuthError("create event room_id domain does not match the sender's")
    content = event.content
    if "room_version" in content:
        v = content["room_version"]
        if not isinstance(v, str) or v not in ROOM_VERSIONS:
            raise AuthError("create event names an unknown room version")
    if not rv.implicit_room_creator and "creator" not in content:
        raise AuthError("create event has no creator")
    if rv.hydra and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("additional_creators must be a list of user IDs")


def _check_member(
    event: Event, auth_state: Mapping[tuple[str, str], Event], levels: _Levels, create: Event
) -> None:
    rv = event.room_version
    target = event.state_key
    content = event.content
    membership = content.get("membership")
    if target is None or not isinstance(membership, str):
        raise AuthError("member event needs a state_key and a membership")
    sender = event.sender

    if rv.restricted_join_rule and AUTHORISING_USER in content:
        authoriser = content[AUTHORISING_USER]
        sigs = event.pdu.get("signatures")
        if not isinstance(authoriser, str) or not isinstance(sigs, dict) or _domain(authoriser) not in sigs:
            raise AuthError("event is not signed by the authorising user's server")

    sender_membership = _membership_of(auth_state, sender)

    if membership == "join":
        prev = event.prev_event_ids
        if len(prev) == 1 and prev[0] == _event_id(create):
            if rv.implicit_room_creator:
                if target == create.sender:
                    return
            elif target == create.content.get("creator"):
                return
        if sender != target:
            raise AuthError("cannot join on behalf of another user")
        if sender_membership == "ban":
            raise AuthError("sender is banned")
        jr_event = auth_state.get(JOIN_RULES_KEY)
        join_rule = jr_event.content.get("join_rule") if jr_event is not None else "invite"
        if join_rule == "invite" or (rv.knock_join_rule and join_rule == "knock"):
            if sender_membership == "invite" or sender_membership == "join":
                return
            raise AuthError("room is invite-only and the sender is not invited")
        if (rv.restricted_join_rule and join_rule == "restricted") or (
            rv.knock_restricted_join_rule and join_rule == "knock_restricted"
        ):
            if sender_membership == "invite" or sender_membership == "join":
                return
            authoriser = content.get(AUTHORISING_USER)
            if not isinstance(authoriser, str):
                raise AuthError("restricted join without an authorising user")
            if _membership_of(auth_state, authoriser) != "join":
                raise AuthError("authorising user is not joined")
            if levels.user(authoriser) < levels.named("invite"):
                raise AuthError("authorising user may not invite")
            return
        if join_rule == "public":
            return
        raise AuthError("join rule does not allow joining")

    target_membership = _membership_of(auth_state, target)

    if membership == "invite":
        if "third_party_invite" in content:
            if target_membership == "ban":
                raise AuthError("target is banned")
            _check_third_party_invite(event, content["third_party_invite"], auth_state)
            return
        if sender_membership != "join":
            raise AuthError("inviter is not joined")
        if target_membership == "join" or target_membership == "ban":
            raise AuthError("target is joined or banned")
        if levels.user(sender) >= levels.named("invite"):
            return
        raise AuthError("sender may not invite")

    if membership == "leave":
        if sender == target:
            if sender_membership == "invite" or sender_membership == "join" or (
                rv.knock_join_rule and sender_membership == "knock"
            ):
                return
            raise AuthError("cannot leave: not joined, invited or knocking")
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        sender_level = levels.user(sender)
        if target_membership == "ban" and sender_level < levels.named("ban"):
            raise AuthError("sender may not unban")
        if sender_level >= levels.named("kick") and levels.user(target) < sender_level:
            return
        raise AuthError("sender may not kick this user")

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        sender_level = levels.user(sender)
        if sender_level >= levels.named("ban") and levels.user(target) < sender_level:
            return
        raise AuthError("sender may not ban this user")

    if membership == "knock" and rv.knock_join_rule:
        jr_event = auth_state.get(JOIN_RULES_KEY)
        join_rule = jr_event.content.get("join_rule") if jr_event is not None else "invite"
        if not (join_rule == "knock" or (rv.knock_restricted_join_rule and join_rule == "knock_restricted")):
            raise AuthError("join rule does not allow knocking")
        if sender != target:
            raise AuthError("cannot knock on behalf of another user")
        if sender_membership == "ban" or sender_membership == "invite" or sender_membership == "join":
            raise AuthError("cannot knock when banned, invited or joined")
        return

    raise AuthError(f"unknown membership {membership!r}")


def _check_third_party_invite(
    event: Event, tpi: object, auth_state: Mapping[tuple[str, str], Event]
) -> None:
    if not isinstance(tpi, dict) or not isinstance(tpi.get("signed"), dict):
        raise AuthError("third_party_invite has no signed object")
    signed: dict[str, Any] = tpi["signed"]
    mxid = signed.get("mxid")
    token = signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed needs mxid and token")
    if mxid != event.state_key:
        raise AuthError("third_party_invite mxid does not match the state_key")
    invite = auth_state.get((THIRD_PARTY_INVITE, token))
    if invite is None:
        raise AuthError("no m.room.third_party_invite for this token")
    if invite.sender != event.sender:
        raise AuthError("sender did not send the m.room.third_party_invite")
    if not _signed_by_any(signed, _public_keys(invite.content)):
        raise AuthError("third_party_invite is not signed by any of the invite's keys")


def _public_keys(content: dict[str, Any]) -> list[bytes]:
    out: list[bytes] = []
    candidates: list[object] = [content.get("public_key")]
    pks = content.get("public_keys")
    if isinstance(pks, list):
        candidates.extend(o.get("public_key") for o in pks if isinstance(o, dict))
    for c in candidates:
        if isinstance(c, str):
            try:
                raw = decode_base64(c)
            except Base64Error:
                continue
            if len(raw) == 32:
                out.append(raw)
    return out


def _signed_by_any(signed: dict[str, Any], keys: list[bytes]) -> bool:
    sigs = signed.get("signatures")
    if not keys or not isinstance(sigs, dict):
        return False
    try:
        message = encode_canonical_json(
            {k: v for k, v in signed.items() if k != "signatures" and k != "unsigned"}
        )
    except CanonicalJSONError:
        return False
    signatures: list[bytes] = []
    for per_server in sigs.values():
        if not isinstance(per_server, dict):
            continue
        for key_id, sig in per_server.items():
            if isinstance(key_id, str) and key_id.startswith("ed25519:") and isinstance(sig, str):
                try:
                    raw = decode_base64(sig)
                except Base64Error:
                    continue
                if len(raw) == 64:
                    signatures.append(raw)
    for key in keys:
        vk = VerifyKey(key)
        for sig in signatures:
            try:
                vk.verify(message, sig)
                return True
            except BadSignatureError:
                continue
    return False


def _check_power_levels(
    event: Event, auth_state: Mapping[tuple[str, str], Event], levels: _Levels, create: Event
) -> None:
    rv = event.room_version
    content = event.content

    # Shape of the new content.
    if rv.enforce_int_power_levels:
        for name, _ in _NAMED_LEVELS:
            if name in content and type(content[name]) is not int:
                raise AuthError(f"power level {name} must be an integer")
        for name in ("events", "notifications"):
            if name in content:
                v = content[name]
                if not isinstance(v, dict) or any(type(x) is not int for x in v.values()):
                    raise AuthError(f"power levels {name} must map to integers")
    new_users = content.get("users", {})
    if not isinstance(new_users, dict):
        raise AuthError("power levels users must be an object")
    new_user_levels: dict[str, int] = {}
    for uid, raw in new_users.items():
        if not is_valid_user_id(uid):
            raise AuthError(f"power levels users has an invalid user ID {uid!r}")
        lvl = _to_level(raw, rv)
        if lvl is None:
            raise AuthError(f"power level of {uid} is not an integer")
        new_user_levels[uid] = lvl
    if rv.hydra:
        for creator in get_room_creators(create):
            if creator in new_users:
                raise AuthError("power levels may not name a room creator in users")

    old = auth_state.get(POWER_LEVELS_KEY)
    if old is None:
        return
    old_content = old.content
    sender = event.sender
    sender_level = levels.user(sender)

    for name, _ in _NAMED_LEVELS:
        o = _to_level(old_content[name], rv) if name in old_content else None
        n = _to_level(content[name], rv) if name in content else None
        if o == n:
            continue
        if (o is not None and o > sender_level) or (n is not None and n > sender_level):
            raise AuthError(f"sender may not change {name} beyond their own level")

    sections = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for section in sections:
        old_map = _level_map(old_content.get(section), rv)
        new_map = _level_map(content.get(section), rv)
        for key in old_map.keys() | new_map.keys():
            o = old_map.get(key)
            n = new_map.get(key)
            if o == n:
                continue
            if (o is not None and o > sender_level) or (n is not None and n > sender_level):
                raise AuthError(f"sender may not change {section}.{key} beyond their own level")

    old_users = _level_map(old_content.get("users"), rv)
    for uid in old_users.keys() | new_user_levels.keys():
        o = old_users.get(uid)
        n = new_user_levels.get(uid)
        if o == n:
            continue
        if o is not None and uid != sender and o >= sender_level:
            raise AuthError(f"sender may not change the level of {uid}")
        if n is not None and n > sender_level:
            raise AuthError(f"sender may not raise {uid} above their own level")


def _level_map(value: object, rv: RoomVersion) -> dict[str, int]:
    # Entries this room version cannot read count as absent.
    if not isinstance(value, dict):
        return {}
    out: dict[str, int] = {}
    for k, v in value.items():
        lvl = _to_level(v, rv)
        if lvl is not None:
            out[k] = lvl
    return out


def events_to_state_map(events: Iterable[Event]) -> dict[tuple[str, str], Event]:
    """A state map from state events (later events win); convenience for callers."""
    return {(e.type, e.pdu["state_key"]): e for e in events if e.is_state()}
