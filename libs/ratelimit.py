"""Per-action token-bucket rate limiting shared by every service.

    limiter = RateLimiter(config.rate_limiting)
    wait_ms = limiter.check("login", client_ip)   # 0 = allowed, else retry_after_ms
    limiter.enforce("message", user_id)            # raises RateLimitExceeded

Actions are the `RateLimit` fields of `RateLimitingConfig` (message, login,
register, join, invite, media_upload); an unknown action is never limited. Keys are
whatever the caller chooses (user ID when authenticated, else client IP). State is
per process (each replica limits on its own), kept in memory and pruned as it grows.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from libs.config.model import RateLimit, RateLimitingConfig


class RateLimitExceeded(Exception):
    """The caller must wait `retry_after_ms` before the action is allowed again."""

    def __init__(self, action: str, retry_after_ms: int) -> None:
        super().__init__(f"rate limit exceeded for {action}; retry after {retry_after_ms} ms")
        self.action = action
        self.retry_after_ms = retry_after_ms


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by (action, key); `burst` tokens, refilled at `per_second`."""

    # Above this many buckets, full (idle) ones are dropped: they carry no state.
    PRUNE_AT = 10_000

    def __init__(
        self, config: RateLimitingConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def _limit(self, action: str) -> RateLimit | None:
        limit = getattr(self._config, action, None)
        return limit if isinstance(limit, RateLimit) else None

    def _refill(self, bucket: _Bucket, limit: RateLimit, now: float) -> None:
        bucket.tokens = min(
            float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.per_second
        )
        bucket.updated = now

    def check(self, action: str, key: str, cost: float = 1.0) -> int:
        """Take `cost` tokens if available and return 0; else return retry_after_ms (> 0)
        without taking anything."""
        if not self._config.enabled:
            return 0
        limit = self._limit(action)
        if limit is None or limit.per_second <= 0 and limit.burst <= 0:
            return 0
        now = self._clock()
        bucket = self._buckets.get((action, key))
        if bucket is None:
            if len(self._buckets) >= self.PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[(action, key)] = _Bucket(float(limit.burst), now)
        else:
            self._refill(bucket, limit, now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0
        if limit.per_second <= 0:
            return 2**31 - 1
        return max(1, math.ceil((cost - bucket.tokens) / limit.per_second * 1000))

    def enforce(self, action: str, key: str, cost: float = 1.0) -> None:
        """Like `check` but raises RateLimitExceeded when limited."""
        wait = self.check(action, key, cost)
        if wait:
            raise RateLimitExceeded(action, wait)

    def _prune(self, now: float) -> None:
        for k, bucket in list(self._buckets.items()):
            limit = self._limit(k[0])
            if limit is None:
                del self._buckets[k]
                continue
            self._refill(bucket, limit, now)
            if bucket.tokens >= limit.burst:
                del self._buckets[k]
