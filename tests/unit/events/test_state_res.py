"""Hand-built state resolution cases (v1, v2, v2.1) and the API's edge behaviour."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import pytest

from bench.rooms import Fork, RoomSim, power_levels
from libs.events.event import Event
from libs.events.room_versions import ROOM_VERSIONS, RoomVersion
from libs.events.state_res import StateResolutionError, resolve_state, resolve_state_sync
from libs.events.state_res._common import auth_closure, conflicted_subgraph
from libs.events.state_res.v2 import lexicographic_topological_sort, mainline_sort

ALICE, BOB, CAROL, DAVE = "@alice:a.example", "@bob:b.example", "@carol:c.example", "@dave:a.example"
MEMBER, PL, JR, TOPIC = "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.topic"


def room(version: str, bob_level: int = 50) -> tuple[RoomSim, Fork]:
    sim = RoomSim(ROOM_VERSIONS[version], random.Random(1), ts_jitter=0, ts_step=1000)
    main = sim.create_room(ALICE, {BOB: bob_level})
    for u in (BOB, CAROL):
        assert sim.send(main, MEMBER, u, {"membership": "join"}, u) is not None
    return sim, main


def resolve(sim: RoomSim, *forks: Fork) -> dict[tuple[str, str], str]:
    sets = [f.state for f in forks]
    ours = resolve_state_sync(sim.room_version, sets, sim.events)
    try:
        from bench import synapse_oracle
    except ImportError:  # the oracle is a test-only extra
        return ours
    # Every hand-built case is also checked against Synapse.
    theirs = synapse_oracle.resolve(sim.room_version.identifier, sim.room_id, sets,
                                    synapse_oracle.to_synapse(sim.events))
    assert ours == theirs
    return ours


class DictLoader:
    def __init__(self, events: dict[str, Event], chains: bool):
        self.events = events
        self.calls = 0
        if chains:
            self.get_auth_chain_ids = self._chain  # type: ignore[method-assign]

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        self.calls += 1
        return {e: self.events[e] for e in event_ids if e in self.events}

    async def _chain(self, event_ids: Iterable[str]) -> set[str]:
        ids = set(event_ids)
        return auth_closure(ids, self.events.get) - ids if ids else set()


@pytest.mark.parametrize("version", ["2", "10", "11", "12"])
def test_ban_vs_demotion(version: str) -> None:
    # Alice demotes Bob while Bob, concurrently, bans Carol: the higher-powered change
    # is ordered first, so Bob's ban no longer passes and Carol stays joined.
    sim, main = room(version)
    a, b = sim.branch(main), sim.branch(main)
    demote = sim.send(a, PL, ALICE, power_levels({} if sim.room_version.hydra else {ALICE: 100}), "")
    ban = sim.send(b, MEMBER, BOB, {"membership": "ban"}, CAROL)
    assert demote and ban
    out = resolve(sim, a, b)
    assert out[(PL, "")] == demote.event_id
    assert out[(MEMBER, CAROL)] == main.state[(MEMBER, CAROL)]


@pytest.mark.parametrize("version", ["2", "11", "12"])
def test_join_rules_race(version: str) -> None:
    # Alice closes the room while Dave joins it: the join rule change wins and the
    # join (checked against join_rule=invite) is dropped.
    sim, main = room(version)
    a, b = sim.branch(main), sim.branch(main)
    jr = sim.send(a, JR, ALICE, {"join_rule": "invite"}, "")
    join = sim.send(b, MEMBER, DAVE, {"membership": "join"}, DAVE)
    assert jr and join
    out = resolve(sim, a, b)
    assert out[(JR, "")] == jr.event_id
    assert (MEMBER, DAVE) not in out


@pytest.mark.parametrize("version", ["2", "11", "12"])
def test_topic_fork_tie_breaks(version: str) -> None:
    sim, main = room(version)
    a, b = sim.branch(main), sim.branch(main)
    t1 = sim.send(a, TOPIC, ALICE, {"topic": "one"}, "", ts=5_000_000)
    t2 = sim.send(b, TOPIC, BOB, {"topic": "two"}, "", ts=5_000_001)
    assert t1 and t2
    assert resolve(sim, a, b)[(TOPIC, "")] == t2.event_id  # later timestamp applied last
    c, d = sim.branch(main), sim.branch(main)
    t3 = sim.send(c, TOPIC, ALICE, {"topic": "three"}, "", ts=6_000_000)
    t4 = sim.send(d, TOPIC, BOB, {"topic": "four"}, "", ts=6_000_000)
    assert t3 and t4
    # Same mainline position and timestamp: the larger event ID is applied last.
    assert resolve(sim, c, d)[(TOPIC, "")] == max(t3.event_id, t4.event_id)
    # Order of the state sets does not matter.
    assert resolve(sim, d, c) == resolve(sim, c, d)


@pytest.mark.parametrize("version", ["2", "11", "12"])
def test_mainline_orders_by_power_levels_history(version: str) -> None:
    # A topic authorised by a newer power levels event beats one authorised by an older
    # one, whatever their timestamps.
    sim, main = room(version)
    old = sim.branch(main)
    t_old = sim.send(old, TOPIC, BOB, {"topic": "old"}, "", ts=9_000_000)
    new = sim.branch(main)
    pl2 = sim.send(new, PL, ALICE, power_levels({BOB: 50} if sim.room_version.hydra else {ALICE: 100, BOB: 50},
                                                 state_default=40), "", ts=2_000_000)
    t_new = sim.send(new, TOPIC, BOB, {"topic": "new"}, "", ts=2_000_001)
    assert t_old and pl2 and t_new
    out = resolve(sim, old, new)
    assert out[(PL, "")] == pl2.event_id
    assert out[(TOPIC, "")] == t_new.event_id
    order = mainline_sort([t_new.event_id, t_old.event_id], pl2.event_id, sim.events.get)
    assert order == [t_old.event_id, t_new.event_id]


def test_v21_starts_from_empty_state_and_v2_does_not() -> None:
    # Bob sets the topic on a branch from before his demotion; after the branches meet,
    # the demotion is unconflicted. v2 checks Bob's topic against the unconflicted
    # (demoted) power levels and resets the topic to Alice's; v2.1 checks it against its
    # own auth events, so the later (Bob's) topic stands.
    results = {}
    for version in ("11", "12"):
        sim, main = room(version)
        t0 = sim.send(main, TOPIC, ALICE, {"topic": "alice"}, "", ts=3_000_000)
        a = sim.branch(main)
        t_bob = sim.send(a, TOPIC, BOB, {"topic": "bob"}, "", ts=4_000_000)
        demote_levels = {} if sim.room_version.hydra else {ALICE: 100}
        demote = sim.send(main, PL, ALICE, power_levels(demote_levels), "", ts=3_500_000)
        assert t0 and t_bob and demote
        a.state[(PL, "")] = demote.event_id  # a merge that already took the demotion
        out = resolve(sim, a, main)
        results[version] = (out[(TOPIC, "")], t0.event_id, t_bob.event_id)
        assert out[(PL, "")] == demote.event_id
    topic11, t0_11, _ = results["11"]
    topic12, _, tbob_12 = results["12"]
    assert topic11 == t0_11
    assert topic12 == tbob_12


def test_conflicted_subgraph_definition() -> None:
    # A chain c1 -> x -> c2 -> y (auth edges): x lies between two conflicted events, y
    # does not.
    sim, main = room("12")
    c2 = sim.send(main, TOPIC, ALICE, {"topic": "c2"}, "")
    assert c2
    pl = sim.send(main, PL, ALICE, power_levels({BOB: 50}, state_default=51), "")
    assert pl
    c1 = sim.send(main, TOPIC, BOB, {"topic": "c1"}, "")  # cites pl, not c2
    assert c1 is None  # Bob (50) is below state_default 51 now
    c1 = sim.send(main, "m.room.name", ALICE, {"name": "c1"}, "")
    assert c1
    # pl cites the earlier PL event; c1 cites pl. With {c1, old_pl} conflicted, pl is
    # on the path between them.
    old_pl = next(a for a in pl.auth_event_ids if sim.events[a].type == PL)
    sub = conflicted_subgraph({c1.event_id, old_pl}, sim.events.get)
    assert sub == {c1.event_id, pl.event_id, old_pl}
    assert conflicted_subgraph({c1.event_id}, sim.events.get) == {c1.event_id}


def test_lexicographic_topological_sort_respects_edges_then_power() -> None:
    sim, main = room("11")
    a, b = sim.branch(main), sim.branch(main)
    e_bob = sim.send(b, TOPIC, BOB, {"t": 1}, "", ts=1)
    e_alice = sim.send(a, TOPIC, ALICE, {"t": 2}, "", ts=2)
    assert e_bob and e_alice
    graph = {e_bob.event_id: [], e_alice.event_id: []}
    # Alice (100) sorts before Bob (50) despite her later timestamp.
    assert lexicographic_topological_sort(graph, sim.events.get) == [e_alice.event_id, e_bob.event_id]
    # An auth edge dominates power: the cited event comes first.
    graph = {e_bob.event_id: [], e_alice.event_id: [e_bob.event_id]}
    assert lexicographic_topological_sort(graph, sim.events.get) == [e_bob.event_id, e_alice.event_id]
    # A cycle (possible with v1/v2 IDs) is dropped rather than looping.
    assert lexicographic_topological_sort({"x": ["y"], "y": ["x"]}, sim.events.get) == []


def test_v1_power_level_conflict_and_normal_conflict() -> None:
    sim, main = room("1")
    a, b = sim.branch(main), sim.branch(main)
    pl_a = sim.send(a, PL, ALICE, power_levels({ALICE: 100, BOB: 50, CAROL: 50}), "")
    t_b = sim.send(b, TOPIC, BOB, {"topic": "b"}, "")
    t_a = sim.send(a, TOPIC, CAROL, {"topic": "a"}, "")
    assert pl_a and t_a and t_b
    out = resolve(sim, a, b)
    assert out[(PL, "")] == pl_a.event_id  # only one side changed it: not a v1 conflict
    # Fork a is one event deeper: v1 takes the conflicted event with the higher depth.
    assert out[(TOPIC, "")] == t_a.event_id


def test_v1_missing_key_is_not_a_conflict() -> None:
    sim, main = room("1")
    a, b = sim.branch(main), sim.branch(main)
    t = sim.send(a, TOPIC, ALICE, {"topic": "x"}, "")
    assert t
    assert resolve(sim, a, b)[(TOPIC, "")] == t.event_id


def test_single_and_identical_state_sets_pass_through() -> None:
    sim, main = room("11")
    assert resolve(sim, main) == main.state
    assert resolve(sim, main, sim.branch(main)) == main.state
    assert resolve_state_sync(sim.room_version, [], sim.events) == {}


@pytest.mark.parametrize("bad", [None, "x", [1], [{("a",): "$x"}], [{("a", "b"): 3}], [{"ab": "$x"}]])
def test_malformed_state_sets_are_typed_errors(bad: object) -> None:
    with pytest.raises(StateResolutionError):
        resolve_state_sync(ROOM_VERSIONS["11"], bad, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_missing_events_are_skipped_not_fatal(version: str) -> None:
    sim, main = room(version)
    a, b = sim.branch(main), sim.branch(main)
    a.state[(TOPIC, "")] = "$nowhere:a.example"
    b.state[(TOPIC, "")] = "$elsewhere:a.example"
    out = resolve(sim, a, b)
    assert out[(MEMBER, BOB)] == main.state[(MEMBER, BOB)]


@pytest.mark.parametrize("version", ["1", "2", "11", "12"])
@pytest.mark.parametrize("chains", [False, True])
async def test_async_matches_sync(version: str, chains: bool) -> None:
    from bench.rooms import random_scenario

    for seed in range(8):
        sim, sets = random_scenario(ROOM_VERSIONS[version], seed)
        loader = DictLoader(sim.events, chains)
        got = await resolve_state(sim.room_version, sets, loader)
        assert got == resolve_state_sync(sim.room_version, sets, sim.events)
        assert loader.calls > 0


def test_rejected_events_are_left_out() -> None:
    sim, main = room("11")
    a, b = sim.branch(main), sim.branch(main)
    t1 = sim.send(a, TOPIC, ALICE, {"topic": "one"}, "", ts=7_000_000)
    t2 = sim.send(b, TOPIC, ALICE, {"topic": "two"}, "", ts=7_000_001)
    assert t1 and t2
    sets = [a.state, b.state]
    assert resolve_state_sync(sim.room_version, sets, sim.events)[(TOPIC, "")] == t2.event_id
    out = resolve_state_sync(sim.room_version, sets, sim.events, rejected_event_ids={t2.event_id})
    assert out[(TOPIC, "")] == t1.event_id
    assert asyncio.iscoroutinefunction(resolve_state)


def test_separate_same_answer_whatever_the_key_order() -> None:
    from libs.events.state_res._common import separate

    rng = random.Random(5)
    base = {("m.room.member", f"@u{i}:x"): f"$e{i}" for i in range(300)}
    sets = []
    for j in range(6):
        s = dict(base)
        for i in rng.sample(range(300), 20):
            s[("m.room.member", f"@u{i}:x")] = f"$f{i}.{j % 3}"
        for i in rng.sample(range(300), 5):
            del s[("m.room.member", f"@u{i}:x")]
        s[("org.extra", str(j % 2))] = "$x"
        sets.append(s)
    expected = separate(sets)
    for _ in range(3):
        shuffled = []
        for s in sets:
            items = list(s.items())
            rng.shuffle(items)
            shuffled.append(dict(items))
        assert separate(shuffled) == expected
    unconflicted, conflicted = expected
    for key in set().union(*sets):
        vals = {s.get(key) for s in sets}
        if len(vals) == 1:
            assert unconflicted[key] == vals.pop()
        else:
            assert conflicted[key] == vals - {None}
