from __future__ import annotations

from libs.config import RateLimit, RateLimitingConfig
from libs.ratelimit import RateLimiter, RateLimitExceeded

import pytest


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def limiter(enabled: bool = True) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    cfg = RateLimitingConfig(enabled=enabled, login=RateLimit(per_second=0.5, burst=3))
    return RateLimiter(cfg, clock=clock), clock


def test_burst_then_limited_with_retry_after() -> None:
    rl, clock = limiter()
    assert [rl.check("login", "1.2.3.4") for _ in range(3)] == [0, 0, 0]
    wait = rl.check("login", "1.2.3.4")
    assert wait == 2000  # one token at 0.5/s
    clock.t += 1.0
    assert rl.check("login", "1.2.3.4") == 1000
    clock.t += 1.0
    assert rl.check("login", "1.2.3.4") == 0
    assert rl.check("login", "1.2.3.4") > 0


def test_keys_and_actions_are_independent() -> None:
    rl, _ = limiter()
    for _ in range(3):
        rl.check("login", "a")
    assert rl.check("login", "a") > 0
    assert rl.check("login", "b") == 0
    assert rl.check("register", "a") == 0
    assert rl.check("no_such_action", "a") == 0


def test_disabled_never_limits() -> None:
    rl, _ = limiter(enabled=False)
    assert all(rl.check("login", "x") == 0 for _ in range(100))


def test_enforce_raises_and_refill_caps_at_burst() -> None:
    rl, clock = limiter()
    clock.t += 10_000  # a long idle time does not bank more than `burst`
    for _ in range(3):
        rl.enforce("login", "k")
    with pytest.raises(RateLimitExceeded) as e:
        rl.enforce("login", "k")
    assert e.value.retry_after_ms == 2000


def test_pruning_drops_idle_buckets() -> None:
    rl, clock = limiter()
    rl.PRUNE_AT = 10  # type: ignore[misc]
    for i in range(10):
        rl.check("login", f"ip{i}")
    clock.t += 100  # all refilled
    rl.check("login", "new")
    assert len(rl._buckets) == 1
