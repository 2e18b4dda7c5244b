"""Run Synapse's state resolution on our events (test-only oracle and benchmark peer).

matrix-synapse is a test-only dependency: import this module only from tests and the
benchmark. Synapse's resolvers are coroutines that only await the store and a clock;
with an in-memory store and a no-op clock they never suspend, so they are driven to
completion with a single `send(None)` — no reactor needed.
"""
from __future__ import annotations

from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

import synapse.event_auth  # noqa: F401  (must load before synapse.state: circular import)
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.events import EventBase, make_event_from_dict
from synapse.state import v1 as syn_v1
from synapse.state import v2 as syn_v2
from synapse.storage.databases.main.event_federation import StateDifference

from libs.events.event import Event

StateKey = tuple[str, str]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("synapse coroutine suspended unexpectedly")


class _Clock:
    async def sleep(self, duration: Any) -> None:
        return None


def to_synapse(events: dict[str, Event]) -> dict[str, EventBase]:
    out: dict[str, EventBase] = {}
    for eid, ev in events.items():
        sev = make_event_from_dict(dict(ev.pdu), KNOWN_ROOM_VERSIONS[ev.room_version.identifier])
        assert sev.event_id == eid, (sev.event_id, eid)
        out[eid] = sev
    return out


def _closure(ids: Iterable[str], events: dict[str, EventBase]) -> set[str]:
    seen: set[str] = set()
    stack = list(ids)
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        ev = events.get(e)
        if ev is not None:
            stack.extend(ev.auth_event_ids())
    return seen


class Store:
    """Synapse's StateResolutionStore over a dict, computing auth chain differences and
    the v2.1 conflicted subgraph straight from their definitions (independently of
    libs.events). `precomputed` short-cuts the answer (benchmark: the real store has
    a chain-cover index, so its cost is left out of Synapse's timing)."""

    def __init__(self, events: dict[str, EventBase]):
        self.events = events
        self.precomputed: StateDifference | None = None

    async def get_events(self, event_ids: Iterable[str], allow_rejected: bool = False) -> dict[str, EventBase]:
        return {e: self.events[e] for e in event_ids if e in self.events}

    def difference(self, state_sets: list[set[str]], conflicted: set[str] | None) -> StateDifference:
        chains = [_closure(s, self.events) for s in state_sets]
        diff = set.union(*chains) - set.intersection(*chains)
        subgraph: set[str] | None = None
        if conflicted is not None:
            # x is on a path between conflicted events: some conflicted event reaches x
            # and x reaches some conflicted event.
            below = _closure(conflicted, self.events)
            subgraph = {x for x in below if _closure([x], self.events) & conflicted}
        return StateDifference(auth_difference=diff, conflicted_subgraph=subgraph)

    async def get_auth_chain_difference(
        self, room_id: str, state_sets: list[set[str]], conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> StateDifference:
        if self.precomputed is not None:
            return StateDifference(set(self.precomputed.auth_difference),
                                   None if self.precomputed.conflicted_subgraph is None
                                   else set(self.precomputed.conflicted_subgraph))
        return self.difference(state_sets, conflicted_state)


def resolve(
    room_version_id: str, room_id: str, state_sets: Sequence[dict[StateKey, str]],
    events: dict[str, EventBase], store: Store | None = None,
) -> dict[StateKey, str]:
    """Synapse's answer: v1 for room version 1, else v2/v2.1."""
    rv = KNOWN_ROOM_VERSIONS[room_version_id]
    store = store or Store(events)
    if room_version_id == "1":
        async def factory(ids: Iterable[str]) -> dict[str, EventBase]:
            return {e: events[e] for e in ids if e in events}
        res = run(syn_v1.resolve_events_with_store(room_id, rv, list(state_sets), {}, factory))
    else:
        res = run(syn_v2.resolve_events_with_store(_Clock(), room_id, rv, list(state_sets), {}, store))
    return dict(res)
