"""State snapshot planning: incremental hashes, deltas, bases, chain bound."""
from __future__ import annotations

import random

from services.roomserver.state import (
    EMPTY_SNAPSHOT,
    MAX_CHAIN,
    NewSnapshot,
    SnapshotInfo,
    apply_changes,
    plan_snapshot,
    state_hash,
)


def test_first_snapshot_is_a_full_base() -> None:
    snap, eff = plan_snapshot(EMPTY_SNAPSHOT, {}, {(1, 1): ("$create", 0)})
    assert isinstance(snap, NewSnapshot)
    assert snap.parent is None and snap.chain_len == 0
    assert snap.delta == [(1, 1, "$create")]
    assert eff == {(1, 1): ("$create", 0)}


def test_no_change_reuses_parent() -> None:
    parent = SnapshotInfo(5, state_hash({(1, 1): ("$a", 1)}), 1, 3)
    snap, eff = plan_snapshot(parent, {(1, 1): ("$a", 1)}, {(1, 1): ("$a", 1)})
    assert snap is parent and eff == {}
    snap, eff = plan_snapshot(parent, {(1, 1): ("$a", 1)}, {(9, 9): None})
    assert snap is parent and eff == {}


def test_delta_is_small_and_hash_is_incremental() -> None:
    rng = random.Random(7)
    state = {(t, s): (f"$e{t}_{s}", t * 100 + s) for t in range(1, 6) for s in range(1, 50)}
    parent = SnapshotInfo(3, state_hash(state), len(state), 2)
    changes = {(2, 7): ("$new", 0), (3, 3): None, (99, 1): ("$added", 0)}
    snap, eff = plan_snapshot(parent, state, changes)
    assert isinstance(snap, NewSnapshot)
    assert snap.parent is parent and snap.chain_len == 3
    assert sorted(snap.delta) == [(2, 7, "$new"), (3, 3, 0), (99, 1, "$added")]
    after = dict(state)
    apply_changes(after, eff)
    assert snap.hash == state_hash(after)
    assert snap.size == len(after)
    # Order independence: the same state built in another order hashes the same.
    items = list(after.items())
    rng.shuffle(items)
    assert state_hash(dict(items)) == snap.hash


def test_chain_is_bounded_by_periodic_bases() -> None:
    state: dict = {}
    snap = EMPTY_SNAPSHOT
    lens = []
    for i in range(3 * MAX_CHAIN + 5):
        new, eff = plan_snapshot(snap, state, {(1, i % 4): (f"$e{i}", i + 1)})
        apply_changes(state, eff)
        assert isinstance(new, NewSnapshot)
        lens.append(new.chain_len)
        if new.parent is None:
            assert sorted(new.delta) == sorted((t, s, e[1]) for (t, s), e in state.items())
        new.nid = i + 1
        snap = new.info()
    assert max(lens) == MAX_CHAIN
    assert lens.count(0) == 3 + 1  # the first snapshot plus one base every MAX_CHAIN + 1
