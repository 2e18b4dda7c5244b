"""Group commit for the projection of roomserver.output.

Every projection transaction allocates its stream positions under the one
`stream_ids` row lock, so transactions of different rooms run one after the other
anyway; one per room meant a BEGIN…COMMIT (and an fsync) per room while every other
room's worker queued on the lock. `GroupCommitter` makes that queue explicit and
useful: calls that arrive while a transaction is in flight are projected together in
the next one (in arrival order; a room's worker submits its next batch only after the
previous one returned, so per-room order holds). If a combined call fails, each call
is retried alone, so one bad batch fails only its own caller.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    """`submit(items)` -> `apply(items)`'s results for those items, with concurrent
    submissions merged into one `apply` call (at most `max_items` items, unless a
    single submission is larger)."""

    def __init__(self, apply: Callable[[list[T]], Awaitable[list[R]]], *, max_items: int = 500) -> None:
        self._apply = apply
        self._max_items = max_items
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._task: asyncio.Task[None] | None = None
        self.calls = 0      # apply() calls made (for tests and metrics)
        self.merged = 0     # submissions that shared a call with another

    async def submit(self, items: list[T]) -> list[R]:
        if not items:
            return []
        fut: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="syncapi-group-commit")
        # shield: a cancelled caller (e.g. a revoked partition) must not cancel the
        # transaction others are waiting on; its items are projected anyway (idempotent).
        return await asyncio.shield(fut)

    def _take(self) -> list[tuple[list[T], asyncio.Future[list[R]]]]:
        calls: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        n = 0
        while self._pending and (not calls or n + len(self._pending[0][0]) <= self._max_items):
            call = self._pending.pop(0)
            calls.append(call)
            n += len(call[0])
        return calls

    async def _drain(self) -> None:
        while self._pending:
            calls = self._take()
            if len(calls) > 1:
                self.merged += len(calls)
            flat = [x for items, _f in calls for x in items]
            try:
                self.calls += 1
                results = await self._apply(flat)
            except asyncio.CancelledError:
                for _items, fut in calls:
                    if not fut.done():
                        fut.cancel()
                raise
            except Exception as exc:
                if len(calls) == 1:
                    _settle(calls[0][1], exc=exc)
                    continue
                log.warning("combined projection of %d batches failed (%r); retrying each alone", len(calls), exc)
                for items, fut in calls:
                    try:
                        self.calls += 1
                        _settle(fut, await self._apply(items))
                    except asyncio.CancelledError:
                        raise
                    except Exception as one_exc:
                        _settle(fut, exc=one_exc)
                continue
            i = 0
            for items, fut in calls:
                _settle(fut, results[i:i + len(items)])
                i += len(items)


def _settle(fut: asyncio.Future[list[R]], result: list[R] | None = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result if result is not None else [])
