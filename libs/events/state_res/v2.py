"""State resolution v2 (room versions 2–11) and v2.1 (room version 12).

A synchronous core over a `get(event_id) -> Event | None` lookup; the async entry
point in the package prefetches what the core needs and calls it. Missing events are
skipped rather than fatal, and every walk of the auth DAG is cycle-safe (v1/v2 event
IDs are chosen by servers, so a hostile DAG may loop)."""
from __future__ import annotations

import heapq
from collections.abc import Container, Iterable, Mapping, Sequence

from ..event import Event
from ..room_versions import RoomVersion, StateResVersion
from ._common import (
    POWER_KEY,
    GetEvent,
    StateKey,
    StateMap,
    auth_difference,
    auth_ids,
    auth_keys_for_event,
    conflicted_subgraph,
    is_power_event,
    passes_auth,
    sender_power_level,
    separate,
)


def full_conflicted_set(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    unconflicted: Mapping[StateKey, str],
    conflicted: Mapping[StateKey, set[str]],
    get: GetEvent,
    auth_diff: set[str] | None = None,
) -> set[str]:
    """Conflicted events ∪ auth difference (∪ the conflicted state subgraph in v2.1),
    keeping only events `get` knows."""
    conflicted_ids: set[str] = set()
    for ids in conflicted.values():
        conflicted_ids.update(ids)
    if auth_diff is None:
        auth_diff = auth_difference(state_sets, get, unconflicted, conflicted)
    full = conflicted_ids | auth_diff
    if room_version.state_res is StateResVersion.V2_1:
        full |= conflicted_subgraph(conflicted_ids, get)
    return {eid for eid in full if get(eid) is not None}


def resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    get: GetEvent,
    *,
    auth_diff: set[str] | None = None,
    rejected: Container[str] = frozenset(),
) -> dict[StateKey, str]:
    """Resolve `state_sets` with state resolution v2, or v2.1 for room version 12.

    `auth_diff` may be supplied by a caller with a faster auth chain index; otherwise it
    is computed by walking auth_events through `get`."""
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted
    full = full_conflicted_set(room_version, state_sets, unconflicted, conflicted, get, auth_diff)

    if room_version.state_res is StateResVersion.V2_1:
        resolved: dict[StateKey, str] = {}  # v2.1: start from nothing
    else:
        resolved = dict(unconflicted)

    power = [eid for eid in full if is_power_event(get(eid))]  # type: ignore[arg-type]
    sorted_power = reverse_topological_power_sort(power, full, get)
    iterative_auth_checks(sorted_power, resolved, get, rejected)

    done = set(sorted_power)
    leftover = [eid for eid in full if eid not in done]
    leftover = mainline_sort(leftover, resolved.get(POWER_KEY), get)
    iterative_auth_checks(leftover, resolved, get, rejected)

    resolved.update(unconflicted)
    return resolved


def reverse_topological_power_sort(event_ids: Iterable[str], full: set[str], get: GetEvent) -> list[str]:
    """The events and their auth ancestors within `full`, earliest first, ties broken by
    (sender power level desc, origin_server_ts asc, event_id asc)."""
    graph: dict[str, list[str]] = {}  # event -> its auth events inside the graph
    stack = list(event_ids)
    while stack:
        eid = stack.pop()
        if eid in graph:
            continue
        ev = get(eid)
        edges: list[str] = []
        graph[eid] = edges
        if ev is None:
            continue
        for aid in auth_ids(ev):
            if aid in full and aid not in edges:
                edges.append(aid)
                if aid not in graph:
                    stack.append(aid)
    return lexicographic_topological_sort(graph, get)


def lexicographic_topological_sort(graph: dict[str, list[str]], get: GetEvent) -> list[str]:
    """Kahn's algorithm from the events citing nothing in the graph, taking the
    smallest candidate by power order each step. Nodes on a cycle are left out."""
    outdeg: dict[str, int] = {}
    cited_by: dict[str, list[str]] = {}
    ready: list[tuple[int, int, str]] = []
    for node, edges in graph.items():
        outdeg[node] = len(edges)
        for e in edges:
            cited_by.setdefault(e, []).append(node)

    def key(node: str) -> tuple[int, int, str]:
        ev = get(node)
        if ev is None:
            return (0, 0, node)
        return (-sender_power_level(ev, get), ev.origin_server_ts, node)

    for node, n in outdeg.items():
        if n == 0:
            ready.append(key(node))
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        node = heapq.heappop(ready)[2]
        out.append(node)
        for parent in cited_by.get(node, ()):
            n = outdeg[parent] - 1
            outdeg[parent] = n
            if n == 0:
                heapq.heappush(ready, key(parent))
    return out


def iterative_auth_checks(
    event_ids: Iterable[str],
    resolved: dict[StateKey, str],
    get: GetEvent,
    rejected: Container[str] = frozenset(),
) -> None:
    """Apply each event to `resolved` (in place) if it passes the auth rules against
    its own (non-rejected) auth events overlaid with the resolved state."""
    for eid in event_ids:
        ev = get(eid)
        if ev is None or eid in rejected or not ev.is_state():
            continue
        auth_state: dict[StateKey, Event] = {}
        for aid in auth_ids(ev):
            a = get(aid)
            if a is not None and aid not in rejected:
                sk = a.state_key
                if sk is not None:
                    auth_state[(a.type, sk)] = a
        for key in auth_keys_for_event(ev):
            rid = resolved.get(key)
            if rid is not None:
                r = get(rid)
                if r is not None and rid not in rejected:
                    auth_state[key] = r
        if passes_auth(ev, auth_state):
            resolved[ev.state_tuple] = eid


def _pl_parent(ev: Event, get: GetEvent) -> Event | None:
    """The first m.room.power_levels event among `ev`'s auth events."""
    for aid in auth_ids(ev):
        a = get(aid)
        if a is not None and a.type == "m.room.power_levels" and a.state_key == "":
            return a
    return None


def mainline_sort(event_ids: list[str], power_event_id: str | None, get: GetEvent) -> list[str]:
    """Order by mainline position of the given power levels event (earlier mainline
    first, events not on it at all before everything), then origin_server_ts, event_id."""
    if not event_ids:
        return []
    mainline: list[str] = []
    seen: set[str] = set()
    pid = power_event_id
    while pid is not None and pid not in seen:
        seen.add(pid)
        mainline.append(pid)
        pev = get(pid)
        if pev is None:
            break
        parent = _pl_parent(pev, get)
        pid = parent.event_id if parent is not None else None
    # Depth counted from the oldest mainline event (1); 0 means "not on the mainline".
    depth_of: dict[str, int] = {eid: i + 1 for i, eid in enumerate(reversed(mainline))}

    def depth(ev: Event) -> int:
        chain: list[str] = []
        cur: Event | None = ev
        result = 0
        while cur is not None:
            cid = cur.event_id
            d = depth_of.get(cid)
            if d is not None:
                result = d
                break
            if cid in chain:  # cycle
                break
            chain.append(cid)
            cur = _pl_parent(cur, get)
        for cid in chain[1:]:  # memoise the power events walked (not the start event)
            depth_of[cid] = result
        return result

    keyed = []
    for eid in event_ids:
        ev = get(eid)
        if ev is None:
            keyed.append((0, 0, eid))
        else:
            keyed.append((depth(ev), ev.origin_server_ts, eid))
    keyed.sort()
    return [k[2] for k in keyed]
