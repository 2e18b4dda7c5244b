"""`separate` (state res v2's conflict split, compared block-wise by position) against
its definition, on maps that share or do not share their keys and strings, with keys
reordered, removed, added and values changed — in and across the comparison blocks."""
from __future__ import annotations

import random

import pytest

from libs.events.state_res._common import _BLOCK, StateResolutionError, separate

Key = tuple[str, str]


def reference(sets: list[dict[Key, str]]) -> tuple[dict[Key, str], dict[Key, set[str]]]:
    keys = set().union(*sets)
    unconflicted: dict[Key, str] = {}
    conflicted: dict[Key, set[str]] = {}
    for k in keys:
        vals = {s.get(k) for s in sets}
        if len(vals) == 1 and None not in vals:
            unconflicted[k] = vals.pop()  # type: ignore[assignment]
        else:
            conflicted[k] = {v for v in vals if v is not None}
    return unconflicted, conflicted


def mutate(rng: random.Random, base: dict[Key, str]) -> dict[Key, str]:
    s = dict(base)
    for _ in range(rng.choice([0, 1, 3, 8])):
        if not s:
            break
        k = rng.choice(list(s))
        op = rng.random()
        if op < 0.35:
            s[k] = f"$x{rng.randrange(3)}"
        elif op < 0.5:
            del s[k]
        elif op < 0.65:
            s[("org.extra", str(rng.randrange(4)))] = f"$y{rng.randrange(2)}"
        elif op < 0.8:
            s[k] = s.pop(k)  # moves to the end: every later position is out of step
        else:
            # A value that another key holds (only hostile inputs do this).
            s[k] = rng.choice(list(base.values()))
    r = rng.random()
    if r < 0.15:
        items = list(s.items())
        rng.shuffle(items)
        s = dict(items)
    elif r < 0.3:
        # Fresh objects, as from a database: equal but not identical keys and IDs.
        s = {("".join(a), "".join(b)): "".join(v) for (a, b), v in s.items()}
    return s


@pytest.mark.parametrize("size", [0, 1, _BLOCK - 1, _BLOCK, _BLOCK + 1, 3 * _BLOCK + 7, 1000])
def test_separate_matches_its_definition(size: int) -> None:
    rng = random.Random(size)
    for _ in range(150):
        base = {("m.room.member", f"@u{i}:x"): f"$e{i}" for i in range(size)}
        sets = [mutate(rng, base) for _ in range(rng.randint(1, 6))]
        got = separate(sets)
        assert got == reference(sets)
        # The unconflicted map is a new dict, never one of the inputs.
        assert all(got[0] is not s for s in sets)


def test_separate_rejects_bad_entries_outside_the_first_set() -> None:
    base = {("m.room.member", f"@u{i}:x"): f"$e{i}" for i in range(200)}
    for bad_key, bad_value in [(("a",), "$v"), (("a", 1), "$v"), (("a", "b"), 3)]:
        other = dict(base)
        other[bad_key] = bad_value  # type: ignore[index]
        with pytest.raises(StateResolutionError):
            separate([base, other])
    changed = dict(base)
    changed[("m.room.member", "@u150:x")] = 7  # type: ignore[assignment]
    with pytest.raises(StateResolutionError):
        separate([base, changed])
