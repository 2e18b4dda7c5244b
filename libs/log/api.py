"""The event log interface every Axon service codes against.

Two implementations sit behind it: :mod:`libs.log.embedded` (in-process, durable in
SQLite, the single-process default) and :mod:`libs.log.kafka` (Apache Kafka via
aiokafka, the cluster).  Both keep the same semantics:

* **Keys and placement.**  Every record has a string key.  A key always maps to the
  same partition of a topic: ``partition_for(key, n)`` is Kafka's default
  partitioner (murmur2 of the UTF-8 key bytes, made positive, modulo ``n``), used
  by both implementations so placement is identical in both modes.
* **Per-key order.**  Records of one key are read in the order they were sent.
* **Durable sends.**  ``Producer.send`` returns only once the record is durably
  written (``acks=all`` in Kafka; fsynced in the embedded log).  Until it returns
  the caller must not acknowledge anything to a client.
* **Consumer groups with explicit commits.**  Members of one group share the
  partitions of their topics; partitions move when members join or leave.
  ``Consumer.commit({(topic, partition): next_offset})`` stores the offset of the
  *next* record to read.  Everything after the last commit is delivered again to
  whichever member owns the partition next (after a restart or a rebalance), so
  handlers must be idempotent.  Nothing is committed automatically.
* **Rebalance hooks.**  A :class:`RebalanceListener` set before ``start()`` is told
  which partitions are being taken away (``on_revoked``, awaited *before* another
  member may read them, the place to drain and commit) and which were given.

Most services should not call ``getmany``/``commit`` themselves: use
:class:`libs.log.runner.KeyedRunner`, which adds per-key workers, retries,
dead-lettering and the commit watermark.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Protocol

TopicPartition = tuple[str, int]


class LogError(Exception):
    """Base class of the errors raised by the log adapters."""


class LogClosedError(LogError):
    """The log, producer or consumer is stopped (or not started)."""


class UnknownTopicError(LogError):
    """The topic does not exist (and was not created with ``ensure_topics``)."""


class RecordTooLargeError(LogError):
    """key + value + headers exceed the log's record size limit (rule 6: small records)."""


# Kafka's producer default (max.request.size); enforced identically by both logs.
MAX_RECORD_BYTES = 1_048_576


def check_record_size(key: str, value: bytes, headers: dict[str, bytes] | None,
                      limit: int = MAX_RECORD_BYTES) -> None:
    size = len(key.encode("utf-8")) + len(value) + sum(len(k) + len(v) for k, v in (headers or {}).items())
    if size > limit:
        raise RecordTooLargeError(f"record of {size} bytes exceeds the {limit} byte limit")


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read from the log."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: ``retention_ms=None`` keeps records forever."""

    name: str
    partitions: int
    retention_ms: int | None = None


class RebalanceListener(Protocol):
    """Told about partition moves of a group consumer.  Both hooks are awaited."""

    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    async def on_assigned(self, partitions: set[TopicPartition]) -> None: ...


class Producer(abc.ABC):
    @abc.abstractmethod
    async def send(
        self, topic: str, key: str, value: bytes, headers: dict[str, bytes] | None = None
    ) -> None:
        """Append one record; returns once it is durably written (acks=all)."""


class Consumer(abc.ABC):
    """A member of a consumer group (or, from ``EventLog.tail``, a groupless reader)."""

    @abc.abstractmethod
    def set_rebalance_listener(self, listener: RebalanceListener) -> None:
        """Install the rebalance hooks; call before ``start()``."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Join the group.  Positions start at the committed offsets (else earliest)."""

    @abc.abstractmethod
    async def getmany(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        """Up to ``max_records`` records of assigned partitions, waiting at most
        ``timeout_ms`` for the first one.  Returns ``[]`` on timeout."""

    @abc.abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Durably store, per partition, the offset of the next record to read."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member currently owns."""

    @abc.abstractmethod
    def highwater(self, tp: TopicPartition) -> int | None:
        """Last known end offset (offset of the next record to be written), for lag."""

    @abc.abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed next-offset for ``tp``, or None."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group (revoking partitions first).  Does not commit."""


class EventLog(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def producer(self) -> Producer:
        """A producer sharing the log's connection (cheap; no start/stop needed)."""

    @abc.abstractmethod
    def consumer(self, group: str, topics: list[str]) -> Consumer:
        """A new, not yet started, member of consumer group ``group``."""

    @abc.abstractmethod
    def tail(self, topic: str, partition: int) -> Consumer:
        """A groupless reader of one partition starting at its current end.

        ``commit`` is a no-op; used for non-durable paths such as replies."""

    @abc.abstractmethod
    async def ensure_topics(self, specs: list[TopicSpec]) -> None:
        """Create missing topics; existing ones are left as they are."""

    @abc.abstractmethod
    async def partitions_for(self, topic: str) -> int:
        """Number of partitions of an existing topic."""

    async def __aenter__(self) -> "EventLog":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as signed int32."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length - rest
    if rest >= 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
