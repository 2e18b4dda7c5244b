"""The keyed consumer runner every service uses to consume a topic (design rule 2).

``KeyedRunner(consumer, handler)`` reads batches from a group consumer and:

* runs records of **different keys concurrently** (one worker per
  ``(topic, partition, key)``), at most ``max_in_flight`` handler calls at a time;
* runs records of **one key strictly in order**, one after the other;
* keeps at most ``max_buffered`` fetched-but-unfinished records in memory; when
  full it stops fetching (backpressure) until workers catch up;
* **commits per partition the watermark**: the lowest offset not yet finished (or
  one past the last finished record when everything is done).  It never commits
  past an unfinished record, so a crash redelivers exactly the unfinished tail
  (and possibly some finished records after it: handlers must be idempotent).
  Commits are batched every ``commit_interval_s`` (they are off the latency path).

Batch mode: with ``batch_handler`` (instead of ``handler``) a key's worker hands it
every record of that key queued at that moment (up to ``max_batch``, in offset
order) in one call, e.g. to commit them in one database transaction; they are all
finished together when it returns.  If a batch call raises, its records are
retried one at a time (``batch_handler([record])``) under the retry policy below,
so a poison record is isolated and the others still go through in order.

Failures (poison-record policy): a handler exception is retried with exponential
backoff (``RetryPolicy``); the key's later records wait (order is kept), other keys
go on.  After ``max_attempts`` failed attempts the record is handed to the
``dead_letter`` callback (e.g. :class:`DeadLetterToTopic`) and the key continues.
If dead-lettering itself fails it is retried too.  With no dead-letter callback, or
``max_attempts=0``, the record is retried forever (logged at every failure): a
record is never skipped silently.

Rebalances: on revocation the runner drops the queued, not started records of the
revoked partitions (the next owner gets them from the committed offset), lets
the handler calls already running finish (up to ``revoke_timeout_s``, then cancels
them), commits the watermark and only then lets the partitions go.  Records of a
partition we no longer own are never started.

``stop()`` stops fetching, drains everything already fetched (up to
``drain_timeout_s``), commits and leaves the group.

Metrics: ``RunnerMetrics`` holds optional plain callbacks (processed with duration,
failure, dead-letter, commit); ``stats()`` returns a snapshot with counters and
gauges (in flight, buffered, active keys, committed offsets, lag per partition) for
a Prometheus collector to read.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .api import Consumer, Producer, Record, TopicPartition

log = logging.getLogger(__name__)

Handler = Callable[[Record], Awaitable[None]]
BatchHandler = Callable[[list[Record]], Awaitable[None]]
DeadLetter = Callable[[Record, BaseException], Awaitable[None]]
WorkerKey = tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` handler attempts before dead-lettering (0 = retry forever)."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 10.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(0, attempt - 1))


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    max_in_flight: int = 64
    max_buffered: int = 2000
    fetch_max_records: int = 500
    fetch_timeout_ms: int = 500
    commit_interval_s: float = 0.05
    revoke_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
    max_batch: int = 100  # records per batch_handler call (batch mode only)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(slots=True)
class RunnerMetrics:
    """Optional hooks; each is called synchronously and must not block."""

    on_processed: Callable[[Record, float], None] | None = None
    on_failure: Callable[[Record, BaseException, int], None] | None = None
    on_dead_letter: Callable[[Record, BaseException], None] | None = None
    on_commit: Callable[[dict[TopicPartition, int]], None] | None = None
    # Called every ``stats_interval_s`` with a snapshot (for lag/in-flight/queue gauges).
    on_stats: Callable[["RunnerStats"], None] | None = None
    stats_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class RunnerStats:
    processed: int
    failures: int
    dead_lettered: int
    in_flight: int
    buffered: int
    active_keys: int
    committed: dict[TopicPartition, int]
    lag: dict[TopicPartition, int]


class _Track:
    """Offsets of one partition that were fetched and are not yet committed."""

    __slots__ = ("order", "done", "next_after_last", "committed")

    def __init__(self) -> None:
        self.order: collections.deque[int] = collections.deque()
        self.done: set[int] = set()
        self.next_after_last: int | None = None
        self.committed: int | None = None

    def add(self, offset: int) -> bool:
        if self.next_after_last is not None and offset < self.next_after_last:
            return False  # already seen (e.g. a refetch): the first copy is in flight
        self.order.append(offset)
        self.next_after_last = offset + 1
        return True

    def finish(self, offset: int) -> None:
        self.done.add(offset)

    def watermark(self) -> int | None:
        while self.order and self.order[0] in self.done:
            self.done.discard(self.order.popleft())
        if self.order:
            return self.order[0]
        return self.next_after_last


class _Abandoned(Exception):
    """The record's partition was revoked: stop without marking it done."""


class DeadLetterToTopic:
    """Dead-letter callback that appends the record (same key, value) to ``topic``
    with headers saying where it came from and why it failed."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def __call__(self, record: Record, exc: BaseException) -> None:
        headers = dict(record.headers)
        headers.update({
            "axon-dlq-topic": record.topic.encode(),
            "axon-dlq-partition": str(record.partition).encode(),
            "axon-dlq-offset": str(record.offset).encode(),
            "axon-dlq-error": repr(exc)[:1000].encode("utf-8", "replace"),
        })
        await self._producer.send(self._topic, record.key, record.value, headers)


class KeyedRunner:
    def __init__(
        self,
        consumer: Consumer,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        config: RunnerConfig | None = None,
        dead_letter: DeadLetter | None = None,
        metrics: RunnerMetrics | None = None,
        name: str = "runner",
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self.consumer = consumer
        self.batch_handler = batch_handler
        self.handler: Handler = handler if handler is not None else self._single_via_batch
        self.config = config or RunnerConfig()
        self.dead_letter = dead_letter
        self.metrics = metrics or RunnerMetrics()
        self.name = name
        self._sem = asyncio.Semaphore(self.config.max_in_flight)
        self._tracks: dict[TopicPartition, _Track] = {}
        self._queues: dict[WorkerKey, collections.deque[Record]] = {}
        self._workers: dict[WorkerKey, asyncio.Task[None]] = {}
        self._current: dict[WorkerKey, int] = {}  # key -> records of it being processed
        self._revoking: set[TopicPartition] = set()
        self._buffered = 0
        self._space = asyncio.Event()
        self._space.set()
        self._dirty = asyncio.Event()
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._running = False
        self.processed = 0
        self.failures = 0
        self.dead_lettered = 0
        self._in_flight = 0
        consumer.set_rebalance_listener(self)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Start the consumer (joins the group) and the fetch and commit loops."""
        if self._running:
            return
        self._running = True
        await self.consumer.start()
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name=f"{self.name}-fetch")
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"{self.name}-commit")
        if self.metrics.on_stats is not None:
            self._stats_task = asyncio.create_task(self._stats_loop(), name=f"{self.name}-stats")

    async def stop(self) -> None:
        """Stop fetching, drain what was fetched, commit, leave the group."""
        if not self._running:
            return
        self._running = False
        for task in (self._fetch_task, self._commit_task, self._stats_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        workers = list(self._workers.values())
        if workers:
            _done, pending = await asyncio.wait(workers, timeout=self.config.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self._commit(None)
        await self.consumer.stop()

    async def __aenter__(self) -> "KeyedRunner":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- fetching and dispatch -------------------------------------------------------
    async def _fetch_loop(self) -> None:
        cfg = self.config
        while self._running:
            try:
                while self._buffered >= cfg.max_buffered:
                    self._space.clear()
                    await self._space.wait()
                room = min(cfg.fetch_max_records, cfg.max_buffered - self._buffered)
                records = await self.consumer.getmany(cfg.fetch_timeout_ms, room)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: fetch failed; retrying", self.name)
                await asyncio.sleep(0.5)
                continue
            if records:
                owned = self.consumer.assignment()
                for rec in records:
                    self._dispatch(rec, owned)

    def _dispatch(self, rec: Record, owned: set[TopicPartition]) -> None:
        tp = rec.tp
        if tp not in owned or tp in self._revoking:
            return  # not ours any more: the next owner reads it from the committed offset
        track = self._tracks.get(tp)
        if track is None:
            track = self._tracks[tp] = _Track()
        if not track.add(rec.offset):
            return
        wk = (rec.topic, rec.partition, rec.key)
        q = self._queues.get(wk)
        if q is None:
            q = self._queues[wk] = collections.deque()
        q.append(rec)
        self._buffered += 1
        if wk not in self._workers:
            self._workers[wk] = asyncio.create_task(self._worker(wk, q))

    async def _worker(self, wk: WorkerKey, q: collections.deque[Record]) -> None:
        tp = (wk[0], wk[1])
        try:
            while q:
                if tp in self._revoking or tp not in self._tracks:
                    break
                n = min(len(q), max(1, self.config.max_batch)) if self.batch_handler is not None else 1
                recs = [q[i] for i in range(n)]
                self._current[wk] = n
                try:
                    done = await (self._process_batch(recs) if n > 1 else self._process(recs[0]))
                except _Abandoned:
                    break
                finally:
                    self._current.pop(wk, None)
                done = n if done is None else done
                for _ in range(done):
                    q.popleft()
                self._release(done)
                track = self._tracks.get(tp)
                if track is not None:
                    for rec in recs[:done]:
                        track.finish(rec.offset)
                    self._dirty.set()
                if done < n:
                    break  # partition revoked in the middle of a split batch
        finally:
            if self._workers.get(wk) is asyncio.current_task():
                del self._workers[wk]
            if q and (tp in self._revoking or tp not in self._tracks):
                # Partition gone: drop what this key still had queued.
                self._release(len(q))
                q.clear()
            if not q and self._queues.get(wk) is q:
                del self._queues[wk]

    def _release(self, n: int) -> None:
        self._buffered -= n
        if self._buffered < self.config.max_buffered:
            self._space.set()

    async def _single_via_batch(self, rec: Record) -> None:
        assert self.batch_handler is not None
        await self.batch_handler([rec])

    async def _counted(self, call: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        """Run one handler call inside the concurrency bound, counted as in flight."""
        async with self._sem:
            self._in_flight += 1
            try:
                await call(arg)
            finally:
                self._in_flight -= 1

    async def _process_batch(self, recs: list[Record]) -> int:
        """One batch_handler call for ``recs``; on failure, each record alone with
        retries. Returns how many of ``recs`` (from the start) are finished."""
        assert self.batch_handler is not None
        if recs[0].tp in self._revoking:
            raise _Abandoned()
        started = time.perf_counter()
        try:
            await self._counted(self.batch_handler, recs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            if self.metrics.on_failure:
                self.metrics.on_failure(recs[0], exc, 1)
            log.warning("%s: batch of %d records from %s[%d]@%d key=%r failed, retrying one by one: %r",
                        self.name, len(recs), recs[0].topic, recs[0].partition, recs[0].offset,
                        recs[0].key, exc)
            for i, rec in enumerate(recs):
                try:
                    await self._process(rec)
                except _Abandoned:
                    if i == 0:
                        raise
                    return i
            return len(recs)
        elapsed = time.perf_counter() - started
        self.processed += len(recs)
        if self.metrics.on_processed:
            for rec in recs:
                self.metrics.on_processed(rec, elapsed / len(recs))
        return len(recs)

    async def _process(self, rec: Record) -> None:
        policy = self.config.retry
        attempt = 0
        while True:
            if rec.tp in self._revoking:
                raise _Abandoned()
            attempt += 1
            started = time.perf_counter()
            try:
                await self._counted(self.handler, rec)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if self.metrics.on_failure:
                    self.metrics.on_failure(rec, exc, attempt)
                log.warning("%s: handler failed on %s[%d]@%d key=%r (attempt %d): %r",
                            self.name, rec.topic, rec.partition, rec.offset, rec.key, attempt, exc)
                if policy.max_attempts and attempt >= policy.max_attempts and self.dead_letter is not None:
                    await self._dead_letter(rec, exc)
                    return
                await asyncio.sleep(policy.backoff(attempt))
                continue
            self.processed += 1
            if self.metrics.on_processed:
                self.metrics.on_processed(rec, time.perf_counter() - started)
            return

    async def _dead_letter(self, rec: Record, exc: BaseException) -> None:
        assert self.dead_letter is not None
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.dead_letter(rec, exc)
            except asyncio.CancelledError:
                raise
            except Exception as dl_exc:
                log.error("%s: dead-lettering %s[%d]@%d failed (attempt %d): %r",
                          self.name, rec.topic, rec.partition, rec.offset, attempt, dl_exc)
                if rec.tp in self._revoking:
                    raise _Abandoned() from dl_exc
                await asyncio.sleep(self.config.retry.backoff(attempt))
                continue
            self.dead_lettered += 1
            log.error("%s: dead-lettered %s[%d]@%d key=%r after error %r",
                      self.name, rec.topic, rec.partition, rec.offset, rec.key, exc)
            if self.metrics.on_dead_letter:
                self.metrics.on_dead_letter(rec, exc)
            return

    # -- commits ---------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._commit(None)
            except Exception:
                log.exception("%s: commit failed; will retry", self.name)
                self._dirty.set()
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.config.commit_interval_s)

    async def _commit(self, only: set[TopicPartition] | None) -> None:
        async with self._commit_lock:
            offsets: dict[TopicPartition, int] = {}
            for tp, track in self._tracks.items():
                if only is not None and tp not in only:
                    continue
                mark = track.watermark()
                if mark is not None and (track.committed is None or mark > track.committed):
                    offsets[tp] = mark
            if not offsets:
                return
            await self.consumer.commit(offsets)
            for tp, mark in offsets.items():
                track = self._tracks.get(tp)
                if track is not None:
                    track.committed = mark
            if self.metrics.on_commit:
                self.metrics.on_commit(offsets)

    # -- rebalance hooks (called by the consumer) ---------------------------------------
    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self._revoking |= partitions
        try:
            busy: list[asyncio.Task[None]] = []
            for wk, q in list(self._queues.items()):
                if (wk[0], wk[1]) not in partitions:
                    continue
                task = self._workers.get(wk)
                keep = self._current.get(wk, 0) if task is not None else 0
                while len(q) > keep:
                    q.pop()
                    self._release(1)
                if task is not None:
                    busy.append(task)
            if busy:
                _done, pending = await asyncio.wait(busy, timeout=self.config.revoke_timeout_s)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
            try:
                await self._commit(partitions)
            except Exception:
                log.exception("%s: commit on revocation failed", self.name)
        finally:
            for tp in partitions:
                self._tracks.pop(tp, None)
            for wk in [wk for wk in self._queues if (wk[0], wk[1]) in partitions]:
                q = self._queues.pop(wk)
                self._release(len(q))
                q.clear()
            self._revoking -= partitions

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._tracks[tp] = _Track()

    async def _stats_loop(self) -> None:
        assert self.metrics.on_stats is not None
        while True:
            await asyncio.sleep(self.metrics.stats_interval_s)
            try:
                self.metrics.on_stats(self.stats())
            except Exception:
                log.exception("%s: on_stats hook failed", self.name)

    # -- introspection -----------------------------------------------------------------
    def stats(self) -> RunnerStats:
        committed: dict[TopicPartition, int] = {}
        lag: dict[TopicPartition, int] = {}
        for tp, track in self._tracks.items():
            if track.committed is not None:
                committed[tp] = track.committed
            high = self.consumer.highwater(tp)
            mark = track.watermark()
            if high is not None:
                lag[tp] = max(0, high - (mark if mark is not None else (track.committed or 0)))
        return RunnerStats(
            processed=self.processed,
            failures=self.failures,
            dead_lettered=self.dead_lettered,
            in_flight=self._in_flight,
            buffered=self._buffered,
            active_keys=len(self._queues),
            committed=committed,
            lag=lag,
        )


__all__ = [
    "BatchHandler", "DeadLetterToTopic", "Handler", "KeyedRunner", "RetryPolicy", "RunnerConfig",
    "RunnerMetrics", "RunnerStats",
]
