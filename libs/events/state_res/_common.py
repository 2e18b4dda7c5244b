"""Helpers shared by the state resolution algorithms: auth-DAG walks, conflict
separation, auth keys, sender power levels. Pure, synchronous, no I/O."""
from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, compress, islice
from typing import Any

from ..auth import AuthError, check_auth_rules
from ..event import Event
from ..room_versions import RoomVersion

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]
# Looks an event up; None when it is not known (missing events are skipped, never fatal).
GetEvent = Callable[[str], "Event | None"]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")

# Positions compared per list slice in `separate` (only differing blocks are scanned).
_BLOCK = 64

# Level given to v12 room creators when ordering events (any finite level is below it).
CREATOR_LEVEL = 2**53


class StateResolutionError(ValueError):
    """The input cannot be resolved (e.g. malformed state sets)."""

    errcode = "M_BAD_JSON"


def auth_ids(ev: Event) -> list[str]:
    """The event's auth event IDs; in room v12 the create event (whose ID is implied by
    the room ID, never listed) is added, as every v12 event is authorised by it."""
    return ev.full_auth_event_ids


_FULL_AUTH = operator.attrgetter("full_auth_event_ids")


def check_entries(keys: Iterable[object], values: Iterable[object]) -> None:
    """Raise StateResolutionError unless keys are (str, str) pairs and values strings.
    Type sets are built by C-level maps: state maps hold tens of thousands of entries."""
    keys = keys if isinstance(keys, list) else list(keys)
    if keys and (
        set(map(type, keys)) != {tuple}
        or set(map(len, keys)) != {2}  # type: ignore[arg-type]
        or set(map(type, chain.from_iterable(keys))) != {str}  # type: ignore[arg-type]
    ):
        raise StateResolutionError("state keys must be (event_type, state_key) pairs of strings")
    values = values if isinstance(values, list) else list(values)
    if values and set(map(type, values)) != {str}:
        raise StateResolutionError("event IDs must be strings")


def separate(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split into the unconflicted map and the conflicted keys -> event IDs, checking
    entry types on the way (every entry is either the first set's or conflicted).

    A key absent from some state set is conflicted (state res v2's reading); v1 uses
    `separate_v1` instead. Rooms have tens of thousands of unconflicted entries and a
    handful of conflicts, so each set is compared with the first by list equality over
    blocks of positions (C-level, and an identity check per element when the maps
    share their strings, as copies and loaded snapshots do); only the few blocks that
    differ are looked at entry by entry."""
    if not state_sets:
        return {}, {}
    first = state_sets[0]
    keys0 = list(first)
    vals0 = list(first.values())
    check_entries(keys0, vals0)
    if len(state_sets) == 1:
        return dict(first), {}
    n = len(keys0)
    bad: set[int] = set()
    extra: set[StateKey] = set()
    for s in state_sets[1:]:
        ks = list(s)
        vs = list(s.values())
        m = min(n, len(ks))
        # Positions of s whose key may not be the first set's own key there.
        odd: list[StateKey] = ks[m:]
        # Maps copied from one another keep their key order: find the aligned prefix
        # (bisecting on slices), where only values need comparing.
        p = m
        if (ks != keys0) if len(ks) == n else (ks[:m] != keys0[:m]):
            lo, hi = 0, m
            # Most often only the tail is out of step (keys added or re-added last).
            if m > 2 * _BLOCK and ks[:m - _BLOCK] == keys0[:m - _BLOCK]:
                lo = m - _BLOCK
            while hi - lo > _BLOCK:
                mid = (lo + hi) // 2
                if ks[lo:mid] == keys0[lo:mid]:
                    lo = mid
                else:
                    hi = mid
            p = lo
        if (vs != vals0) if p == n == len(vs) else (vs[:p] != vals0[:p]):
            for b in range(0, p, _BLOCK):
                e = min(b + _BLOCK, p)
                if vs[b:e] != vals0[b:e]:
                    bad.update(compress(range(b, e), map(operator.ne, vs[b:e], vals0[b:e])))
        for b in range(p, m, _BLOCK):
            e = min(b + _BLOCK, m)
            if ks[b:e] == keys0[b:e]:
                if vs[b:e] != vals0[b:e]:
                    bad.update(compress(range(b, e), map(operator.ne, vs[b:e], vals0[b:e])))
                continue
            # Keys out of step here: look the first set's keys up in s.
            bad.update(compress(range(b, e), map(operator.ne, map(s.get, keys0[b:e]), vals0[b:e])))
            odd.extend(ks[b:e])
        if m < n:
            bad.update(compress(range(m, n), map(operator.ne, map(s.get, keys0[m:]), vals0[m:])))
        if odd:
            more = [k for k in odd if k not in first]
            if more:
                check_entries(more, ())
                extra.update(more)
    unconflicted: dict[StateKey, str] = dict(first)
    conflicted: dict[StateKey, set[str]] = {}
    for i in bad:
        del unconflicted[keys0[i]]
    for key in chain((keys0[i] for i in bad), extra):
        ids = [s[key] for s in state_sets if key in s]
        check_entries((), ids)
        conflicted[key] = set(ids)
    return unconflicted, conflicted


def auth_closure(start: Iterable[str], get: GetEvent, stop: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """`start` plus every event reachable from it over auth_events, not walking into
    (nor including) events in `stop` (which must itself be closed under auth edges).

    Walked a generation at a time with C-level maps (a room's whole auth DAG is walked
    for the auth difference): unknown events are dropped by `filter(None, ...)`."""
    seen = set(start)
    if stop:
        seen -= stop
    frontier: Iterable[str] = seen
    while True:
        nxt = set(chain.from_iterable(map(_FULL_AUTH, filter(None, map(get, frontier)))))
        nxt -= seen
        if stop:
            nxt -= stop
        if not nxt:
            return seen
        seen |= nxt
        frontier = nxt


def auth_difference(
    state_sets: Sequence[StateMap], get: GetEvent,
    unconflicted: Mapping[StateKey, str] | None = None,
    conflicted: Mapping[StateKey, set[str]] | None = None,
) -> set[str]:
    """∪Cᵢ − ∩Cᵢ where Cᵢ is the state set's events and their auth chains.

    The events common to every state set have their auth chains in every Cᵢ, so their
    closure K is computed once and each Cᵢ is K ∪ Dᵢ with a small Dᵢ; then the
    difference is ∪Dᵢ − ∩Dᵢ. The common events are the unconflicted ones plus any
    event every set holds among its conflicted keys (only in odd inputs)."""
    if not state_sets:
        return set()
    if unconflicted is None or conflicted is None:
        unconflicted, conflicted = separate(state_sets)
    per_set: list[set[str]] = []
    for s in state_sets:
        per_set.append({s[k] for k in conflicted if k in s})
    common = set(unconflicted.values())
    common |= set.intersection(*per_set)
    k = auth_closure(common, get)
    ds = [auth_closure(ids - common, get, k) for ids in per_set]
    return set.union(*ds) - set.intersection(*ds)


def conflicted_subgraph(conflicted: set[str], get: GetEvent) -> set[str]:
    """Room v12: the events on auth-DAG paths between two conflicted events (endpoints
    included): reachable from a conflicted event and able to reach one."""
    reach = auth_closure(conflicted, get)  # conflicted events and their auth chains
    # Reverse edges inside `reach`, then walk back from the conflicted events.
    cited_by: dict[str, list[str]] = {}
    for eid in reach:
        ev = get(eid)
        if ev is None:
            continue
        for aid in auth_ids(ev):
            if aid in reach:
                cited_by.setdefault(aid, []).append(eid)
    out: set[str] = set()
    stack = [c for c in conflicted if c in reach]
    while stack:
        eid = stack.pop()
        if eid in out:
            continue
        out.add(eid)
        stack.extend(p for p in cited_by.get(eid, ()) if p not in out)
    return out


def auth_keys_for_event(ev: Event) -> set[StateKey]:
    """The state keys that may be needed to authorise `ev` (always including the create
    event's key, which v12 state maps hold even though v12 events never cite it)."""
    t = ev.type
    if t == "m.room.create":
        return set()
    keys = {CREATE_KEY, POWER_KEY, ("m.room.member", ev.sender)}
    if t == "m.room.member":
        content = ev.content
        membership = content.get("membership")
        sk = ev.state_key
        if sk is not None:
            keys.add(("m.room.member", sk))
        if membership in ("join", "invite", "knock"):
            keys.add(JOIN_RULES_KEY)
        if membership == "invite":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict):
                signed = tpi.get("signed")
                if isinstance(signed, dict) and isinstance(signed.get("token"), str):
                    keys.add(("m.room.third_party_invite", signed["token"]))
        if membership == "join" and ev.room_version.restricted_join_rule:
            via = content.get("join_authorised_via_users_server")
            if isinstance(via, str):
                keys.add(("m.room.member", via))
    return keys


def _level(value: Any) -> int:
    # Ordering only: read what a lenient room version would accept, else 0.
    t = type(value)
    if t is int or t is bool:
        return int(value)
    if t is float:
        return int(value) if value == value and value not in (float("inf"), float("-inf")) else 0
    if t is str:
        try:
            return int(value.strip())
        except ValueError:
            return 0
    return 0


def is_creator(create: Event, user_id: str) -> bool:
    if create.sender == user_id:
        return True
    if create.room_version.hydra:
        extra = create.content.get("additional_creators")
        return isinstance(extra, list) and user_id in extra
    return False


def sender_power_level(ev: Event, get: GetEvent) -> int:
    """The sender's power level according to the event's own auth events, as used by
    the reverse topological power ordering."""
    pl: Event | None = None
    create: Event | None = None
    for aid in auth_ids(ev):
        a = get(aid)
        if a is None:
            continue
        t = a.type
        if t == "m.room.power_levels" and a.state_key == "":
            pl = a
        elif t == "m.room.create" and a.state_key == "":
            create = a
    sender = ev.sender
    if create is not None and ev.room_version.hydra and is_creator(create, sender):
        return CREATOR_LEVEL
    if pl is None:
        if create is not None:
            if ev.room_version.implicit_room_creator:
                creator: Any = create.sender
            else:
                creator = create.content.get("creator")
            if creator == sender:
                return 100
        return 0
    content = pl.content
    users = content.get("users")
    level = users.get(sender) if isinstance(users, dict) else None
    if level is None:
        level = content.get("users_default", 0)
    if level is None:
        return 0
    return _level(level)


def is_power_event(ev: Event) -> bool:
    """Spec definition (power levels, join rules, kicks and bans) plus the create event,
    which can only be conflicted in a broken room but then must be ordered first."""
    if not ev.is_state():
        return False
    t = ev.type
    sk = ev.state_key
    if sk == "" and (t == "m.room.power_levels" or t == "m.room.join_rules" or t == "m.room.create"):
        return True
    if t == "m.room.member":
        m = ev.membership
        return (m == "leave" or m == "ban") and ev.sender != sk
    return False


def passes_auth(ev: Event, auth_state: Mapping[StateKey, Event]) -> bool:
    """The state-dependent auth rules, as state resolution applies them. The create
    event has no state-dependent rules (its own checks happened when it was received)."""
    if ev.type == "m.room.create":
        return True
    try:
        check_auth_rules(ev, auth_state)
    except AuthError:
        return False
    return True
