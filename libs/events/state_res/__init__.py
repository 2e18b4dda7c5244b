"""State resolution: v1 (room version 1), v2 (2–11), v2.1 (12).

Two entry points run the same synchronous algorithm:

* `resolve_state_sync(room_version, state_sets, events)` — everything in memory;
* `await resolve_state(room_version, state_sets, loader)` — prefetches from an
  `EventLoader` exactly the events the algorithm will look at, then runs the core.

State sets map (event_type, state_key) to event IDs; the result is the resolved map.
Events the loader does not know are skipped, never fatal. Malformed state sets raise
`StateResolutionError` (errcode M_BAD_JSON).
"""
from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..event import Event
from ..room_versions import RoomVersion, StateResVersion
from ._common import (
    POWER_KEY,
    StateKey,
    StateResolutionError,
    auth_ids,
    auth_keys_for_event,
    check_entries,
    separate,
)
from .v1 import resolve_v1, separate_v1
from .v2 import resolve_v2

__all__ = [
    "EventLoader", "StateResolutionError", "resolve_state", "resolve_state_sync",
    "resolve_v1", "resolve_v2",
]


@runtime_checkable
class EventLoader(Protocol):
    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """The events known among `event_ids`; unknown IDs are simply absent."""
        ...


class _AuthChainLoader(Protocol):
    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Every event reachable from `event_ids` over auth_events (not the events themselves)."""
        ...


def _check_state_sets(state_sets: object, entries: bool) -> list[dict[StateKey, str]]:
    """Check the containers; with `entries`, every key and event ID too (v2's
    `separate` checks entries itself as it goes, at no extra cost). Not copied:
    nothing mutates the input."""
    if not isinstance(state_sets, (list, tuple)):
        raise StateResolutionError("state_sets must be a list of state maps")
    out: list[dict[StateKey, str]] = []
    for s in state_sets:
        if not isinstance(s, Mapping):
            raise StateResolutionError("each state set must be a mapping")
        d = s if type(s) is dict else dict(s)
        if entries:
            check_entries(d.keys(), d.values())
        out.append(d)
    return out


def resolve_state_sync(
    room_version: RoomVersion,
    state_sets: list[dict[tuple[str, str], str]],
    events: dict[str, Event],
    *,
    rejected_event_ids: Container[str] = frozenset(),
) -> dict[tuple[str, str], str]:
    """Resolve with every needed event in `events` (state events and their auth chains).
    `rejected_event_ids`: events rejected on receipt; v2 leaves them out of the checks."""
    v1 = room_version.state_res is StateResVersion.V1
    sets = _check_state_sets(state_sets, entries=v1)
    if not sets:
        return {}
    if room_version.state_res is StateResVersion.V1:
        return resolve_v1(sets, events.get)
    return resolve_v2(room_version, sets, events.get, rejected=rejected_event_ids)


class _Prefetcher:
    """Fetches from the loader in batches and remembers what is known and what is missing."""

    def __init__(self, loader: EventLoader):
        self.loader = loader
        self.events: dict[str, Event] = {}
        self.absent: set[str] = set()

    async def fetch(self, ids: Iterable[str]) -> None:
        want = {i for i in ids if i not in self.events and i not in self.absent}
        if not want:
            return
        got = await self.loader.get_events(want)
        for eid in want:
            ev = got.get(eid)
            if ev is None:
                self.absent.add(eid)
            else:
                self.events[eid] = ev

    async def fetch_closure(self, ids: Iterable[str]) -> None:
        """`ids` and their whole auth chains, one batch per generation."""
        frontier = set(ids)
        done: set[str] = set()
        while frontier:
            await self.fetch(frontier)
            done |= frontier
            nxt: set[str] = set()
            for eid in frontier:
                ev = self.events.get(eid)
                if ev is not None:
                    nxt.update(a for a in auth_ids(ev) if a not in done)
            frontier = nxt


async def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[tuple[str, str], str]],
    loader: EventLoader,
    *,
    rejected_event_ids: Container[str] = frozenset(),
) -> dict[tuple[str, str], str]:
    """Resolve `state_sets`, loading events through `loader`.

    If the loader has `get_auth_chain_ids`, the auth difference is computed from it and
    only the conflicted part of the DAG is loaded; otherwise the full auth chains of
    every state set are loaded and walked."""
    sets = _check_state_sets(list(state_sets), entries=room_version.state_res is StateResVersion.V1)
    if not sets:
        return {}
    pf = _Prefetcher(loader)

    if room_version.state_res is StateResVersion.V1:
        if len(sets) == 1:
            return dict(sets[0])
        unconflicted, conflicted = separate_v1(sets)
        if not conflicted:
            return unconflicted
        await pf.fetch(i for ids in conflicted.values() for i in ids)
        keys: set[StateKey] = set()
        for ids in conflicted.values():
            for i in ids:
                ev = pf.events.get(i)
                if ev is not None:
                    keys |= auth_keys_for_event(ev)
        await pf.fetch(unconflicted[k] for k in keys if k in unconflicted)
        return resolve_v1(sets, pf.events.get)

    unconflicted, conflicted = separate(sets)
    if not conflicted:
        return unconflicted
    conflicted_ids = {i for ids in conflicted.values() for i in ids}

    chain_of = getattr(loader, "get_auth_chain_ids", None)
    auth_diff: set[str] | None = None
    if chain_of is None:
        await pf.fetch_closure(i for s in sets for i in s.values())
    else:
        id_sets = [set(s.values()) for s in sets]
        common = set.intersection(*id_sets)
        k = set(await chain_of(common)) | common
        ds = []
        for ids in id_sets:
            rest = ids - common
            ds.append(((set(await chain_of(rest)) if rest else set()) | rest) - k)
        auth_diff = set.union(*ds) - set.intersection(*ds)
        # Everything the core walks: the full conflicted set's auth chains (which hold
        # the v2.1 conflicted subgraph, sender levels and mainlines), then the
        # unconflicted events that authorise them, and the unconflicted power levels'
        # mainline.
        await pf.fetch_closure(conflicted_ids | auth_diff)
        keys = {POWER_KEY}
        for eid in conflicted_ids | auth_diff:
            ev = pf.events.get(eid)
            if ev is not None:
                keys |= auth_keys_for_event(ev)
        needed = [unconflicted[k] for k in keys if k in unconflicted]
        await pf.fetch(needed)
        pl = unconflicted.get(POWER_KEY)
        if pl is not None:
            await pf.fetch_closure([pl])
    return resolve_v2(room_version, sets, pf.events.get, auth_diff=auth_diff, rejected=rejected_event_ids)
