"""State resolution v1 (room version 1).

Known to reset state in some cases (that is why v2 exists); implemented as deployed
servers run it so that room version 1 rooms agree across servers:

* a key is conflicted only when two state sets hold different events for it (a key
  missing from some sets is not a conflict);
* conflicted power levels, then join rules, then memberships are resolved in that
  order, each phase authorising against the state as it stood after the previous
  phase; an auth-type conflict is resolved by walking its events by ascending depth
  then descending sha1(event_id), keeping the last one that passes;
* every other conflict takes the first event by descending depth then ascending
  sha1(event_id) that passes auth (the last in that order if none does).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..event import Event
from ._common import POWER_KEY, GetEvent, StateKey, StateMap, auth_keys_for_event, passes_auth


def separate_v1(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for s in state_sets:
        for key, eid in s.items():
            cur = unconflicted.get(key)
            if cur is None:
                ids = conflicted.get(key)
                if ids is None:
                    unconflicted[key] = eid
                else:
                    ids.add(eid)
            elif cur != eid:
                conflicted[key] = {cur, eid}
                del unconflicted[key]
    return unconflicted, conflicted


def _order_key(ev: Event) -> tuple[int, str]:
    eid = ev.event_id.encode("utf-8", "surrogatepass")
    return (-ev.depth, hashlib.sha1(eid).hexdigest())


def needed_auth_keys(conflicted: dict[StateKey, list[Event]]) -> set[StateKey]:
    keys: set[StateKey] = set()
    for evs in conflicted.values():
        for ev in evs:
            keys |= auth_keys_for_event(ev)
    return keys


def _state_of(ids: dict[StateKey, str], get: GetEvent) -> dict[StateKey, Event]:
    out: dict[StateKey, Event] = {}
    for key, eid in ids.items():
        ev = get(eid)
        if ev is not None:
            out[key] = ev
    return out


def _resolve_auth_conflict(events: list[Event], state: dict[StateKey, Event]) -> Event:
    ordered = sorted(events, key=_order_key)
    ordered.reverse()  # ascending depth, descending sha1
    trial = dict(state)
    prev = ordered[0]
    for ev in ordered[1:]:
        trial[prev.state_tuple] = prev
        if not passes_auth(ev, trial):
            return prev
        prev = ev
    return prev


def _resolve_normal_conflict(events: list[Event], state: dict[StateKey, Event]) -> Event:
    ordered = sorted(events, key=_order_key)
    for ev in ordered:
        if passes_auth(ev, state):
            return ev
    return ordered[-1]


def resolve_v1(state_sets: Sequence[StateMap], get: GetEvent) -> dict[StateKey, str]:
    if len(state_sets) == 1:
        return dict(state_sets[0])
    unconflicted, conflicted_ids = separate_v1(state_sets)
    conflicted: dict[StateKey, list[Event]] = {}
    for key, ids in conflicted_ids.items():
        evs = [ev for ev in (get(i) for i in ids) if ev is not None]
        if len(evs) > 1:
            conflicted[key] = evs
        elif evs:
            unconflicted[key] = evs[0].event_id
    if not conflicted:
        return unconflicted

    state = _state_of({k: unconflicted[k] for k in needed_auth_keys(conflicted) if k in unconflicted}, get)
    resolved: dict[StateKey, Event] = {}
    if POWER_KEY in conflicted:
        resolved[POWER_KEY] = _resolve_auth_conflict(conflicted[POWER_KEY], state)
    state.update(resolved)
    # Each phase sees the state as of the end of the previous phase only.
    for etype in ("m.room.join_rules", "m.room.member"):
        phase = {k: _resolve_auth_conflict(evs, state) for k, evs in conflicted.items() if k[0] == etype}
        resolved.update(phase)
        state.update(phase)
    for key, evs in conflicted.items():
        if key not in resolved:
            resolved[key] = _resolve_normal_conflict(evs, state)

    out = dict(unconflicted)
    for key, ev in resolved.items():
        out[key] = ev.event_id
    return out
