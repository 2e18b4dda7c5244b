"""Differential tests: our state resolution against Synapse's (v1, v2, v2.1) on
randomized room DAGs (forks, nested forks, merges, concurrent power level, membership,
ban, rejoin and join rule changes).

CI runs fixed seeds; AXON_LONG_FUZZ=1 runs the long version (AXON_FUZZ_SEEDS seeds per
room version and shape, default 400)."""
from __future__ import annotations

import os
from collections import Counter

import pytest

pytest.importorskip("synapse")

from bench import synapse_oracle  # noqa: E402
from bench.rooms import random_scenario  # noqa: E402
from libs.events.room_versions import ROOM_VERSIONS  # noqa: E402
from libs.events.state_res import resolve_state_sync  # noqa: E402
from libs.events.state_res._common import separate  # noqa: E402

VERSIONS = ["1", "2", "10", "11", "12"]
# (forks, steps): a plain fork, several forks with much activity.
SHAPES = [(2, 8), (3, 14), (5, 24)]
CI_SEEDS = 60

COUNTS: Counter[str] = Counter()


def _run(version: str, seeds: range, shape: tuple[int, int]) -> None:
    rv = ROOM_VERSIONS[version]
    forks, steps = shape
    for seed in seeds:
        sim, sets = random_scenario(rv, seed * 7919 + forks, forks=forks, steps=steps)
        ours = resolve_state_sync(rv, sets, sim.events)
        theirs = synapse_oracle.resolve(version, sim.room_id, sets, synapse_oracle.to_synapse(sim.events))
        COUNTS["cases"] += 1
        COUNTS["conflicted_keys"] += len(separate(sets)[1])
        if ours != theirs:
            diff = {k: (ours.get(k), theirs.get(k)) for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
            pytest.fail(f"v{version} seed={seed} shape={shape}: ours vs synapse differ on {diff}")
        COUNTS["agreed"] += 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("version", VERSIONS)
def test_matches_synapse(version: str, shape: tuple[int, int]) -> None:
    _run(version, range(CI_SEEDS), shape)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("AXON_LONG_FUZZ") != "1", reason="set AXON_LONG_FUZZ=1 for the long run")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("version", VERSIONS)
def test_matches_synapse_long(version: str, shape: tuple[int, int]) -> None:
    n = int(os.environ.get("AXON_FUZZ_SEEDS", "400"))
    _run(version, range(CI_SEEDS, CI_SEEDS + n), shape)


def test_report_counts(capsys: pytest.CaptureFixture[str]) -> None:
    # Runs last in this module: report how many differential cases ran and agreed.
    with capsys.disabled():
        print(f"\nstate_res differential vs synapse: {COUNTS['agreed']}/{COUNTS['cases']} agreed, "
              f"{COUNTS['conflicted_keys']} conflicted keys")
    assert COUNTS["agreed"] == COUNTS["cases"]
