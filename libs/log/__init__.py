"""Axon's event log: one interface, two implementations (see :mod:`libs.log.api`).

Typical use by a service::

    from libs.log import LogConfig, TopicSpec, open_log, KeyedRunner

    log = open_log(LogConfig(kind="embedded", path="data/log.sqlite3"))
    await log.start()
    await log.ensure_topics([TopicSpec("roomserver.input", partitions=8)])
    await log.producer().send("roomserver.input", key=room_id, value=payload)

    runner = KeyedRunner(log.consumer("roomserver", ["roomserver.input"]), handle)
    await runner.start()   # ... await runner.stop() drains and commits
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .api import (
    Consumer,
    EventLog,
    LogClosedError,
    LogError,
    Producer,
    RebalanceListener,
    Record,
    RecordTooLargeError,
    TopicPartition,
    TopicSpec,
    UnknownTopicError,
    murmur2,
    partition_for,
)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Which log to open.  ``path`` is used by "embedded"; the rest by "kafka"."""

    kind: Literal["embedded", "kafka"] = "embedded"
    path: str = "axon-log.sqlite3"
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "axon"
    topic_prefix: str = ""
    replication_factor: int = 1
    default_partitions: int = 4  # embedded: partitions of auto-created topics
    fsync: bool = True  # embedded: fsync every commit (False: kill -9 safe, not power-loss safe)


def open_log(config: LogConfig) -> EventLog:
    """Build (not start) the configured log."""
    if config.kind == "embedded":
        from .embedded import EmbeddedLog

        return EmbeddedLog(config.path, default_partitions=config.default_partitions, fsync=config.fsync)
    if config.kind == "kafka":
        from .kafka import KafkaLog

        return KafkaLog(
            config.bootstrap_servers,
            client_id=config.client_id,
            topic_prefix=config.topic_prefix,
            replication_factor=config.replication_factor,
        )
    raise ValueError(f"unknown log kind {config.kind!r}")


from .runner import DeadLetterToTopic, KeyedRunner, RetryPolicy, RunnerConfig, RunnerMetrics, RunnerStats  # noqa: E402
from .reply import InProcessReplies, LogReplies, ReplyChannel, ReplySender, ReplyTimeout  # noqa: E402

__all__ = [
    "Consumer", "EventLog", "LogClosedError", "LogError", "Producer", "RebalanceListener", "Record", "RecordTooLargeError",
    "TopicPartition", "TopicSpec", "UnknownTopicError", "murmur2", "partition_for", "LogConfig", "open_log",
    "KeyedRunner", "RunnerConfig", "RetryPolicy", "RunnerMetrics", "RunnerStats", "DeadLetterToTopic",
    "InProcessReplies", "LogReplies", "ReplyChannel", "ReplySender", "ReplyTimeout",
]
