"""Apache Kafka behind :class:`EventLog`, via aiokafka (the cluster mode).

* Producer: ``acks="all"`` and idempotence on (no duplicates or reordering on
  retries), a 1 ms linger (send is on the /send latency path), Kafka's default
  partitioner (murmur2 of the key, same as :func:`libs.log.api.partition_for`).
* Consumers: ``enable_auto_commit=False`` (only explicit commits), earliest reset,
  heartbeats every ``heartbeat_interval_ms`` so members notice a rebalance quickly,
  a session timeout that detects dead members (the broker's minimum is 6 s), and
  a generous ``max_poll_interval_ms``: the runner keeps polling while handlers run.
  The :class:`RebalanceListener` is bridged to aiokafka's listener, which aiokafka
  awaits during the rebalance, before the partitions are handed to another member.
* Topics: created with explicit partition counts and ``retention.ms`` through the
  admin client.  All names (topics and consumer groups) get ``topic_prefix`` on the wire; records handed back
  carry the unprefixed name, so services never see the prefix.
* Outages: every send has a deadline (``send_timeout_ms``); a broker that is down or
  unreachable makes ``send`` raise :class:`LogError` by then (the HTTP edge answers
  503), instead of aiokafka's own expiry (``request_timeout_ms`` for metadata, then
  again for the batch).  A send that timed out may still be delivered later (the
  record stays in aiokafka's accumulator, in order): callers retry idempotently
  (same txn ID, consumers dedupe on event_id).  aiokafka reconnects by itself when
  the broker is back; consumers rejoin their group and resume from the committed
  offsets.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition as KTP
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from .api import (
    Consumer,
    EventLog,
    LogClosedError,
    LogError,
    Producer,
    RebalanceListener,
    Record,
    TopicPartition,
    TopicSpec,
    UnknownTopicError,
    check_record_size,
)

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


class KafkaLog(EventLog):
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "axon",
        topic_prefix: str = "",
        replication_factor: int = 1,
        linger_ms: int = 1,
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 500,
        max_poll_interval_ms: int = 300000,
        rebalance_timeout_ms: int = 60000,
        request_timeout_ms: int = 30000,
        send_timeout_ms: int = 10000,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.topic_prefix = topic_prefix
        self.replication_factor = replication_factor
        self._linger_ms = linger_ms
        self._consumer_opts = dict(
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            request_timeout_ms=request_timeout_ms,
        )
        self._request_timeout_ms = request_timeout_ms
        self.send_timeout_s = send_timeout_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    def wire(self, topic: str) -> str:
        return self.topic_prefix + topic

    def unwire(self, topic: str) -> str:
        return topic[len(self.topic_prefix) :] if topic.startswith(self.topic_prefix) else topic

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            request_timeout_ms=self._request_timeout_ms,
        )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id + "-admin",
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await producer.start()
            await admin.start()
        except KafkaError as exc:
            await producer.stop()
            await admin.close()
            raise LogError(f"cannot reach Kafka at {self.bootstrap_servers}: {exc!r}") from exc
        self._producer, self._admin = producer, admin

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    async def ping(self, timeout_s: float = 3.0) -> None:
        """Raise LogError unless a broker answers a metadata request (for /ready)."""
        producer = self._require()
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
        except asyncio.TimeoutError as exc:
            raise LogError(f"no broker answered within {timeout_s:.0f}s") from exc
        except KafkaError as exc:
            raise LogError(f"no broker reachable: {exc!r}") from exc

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise LogClosedError("kafka log is not started")
        return self._producer

    def producer(self) -> Producer:
        return _KafkaProducer(self)

    def consumer(self, group: str, topics: list[str]) -> Consumer:
        return KafkaConsumer(self, group, list(topics))

    def tail(self, topic: str, partition: int) -> Consumer:
        return KafkaConsumer(self, None, [topic], fixed_partition=partition)

    async def ensure_topics(self, specs: list[TopicSpec]) -> None:
        if self._admin is None:
            raise LogClosedError("kafka log is not started")
        existing = set(await self._admin.list_topics())
        todo = [s for s in specs if self.wire(s.name) not in existing]
        if not todo:
            return
        new = []
        for s in todo:
            configs = {"retention.ms": str(s.retention_ms if s.retention_ms is not None else -1)}
            new.append(NewTopic(self.wire(s.name), s.partitions, self.replication_factor, topic_configs=configs))
        try:
            resp = await self._admin.create_topics(new)
        except KafkaError as exc:
            raise LogError(f"create topics failed: {exc!r}") from exc
        for err in getattr(resp, "topic_errors", []):
            name, code = err[0], err[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise LogError(f"create topic {name} failed: error {code} {err[2] if len(err) > 2 else ''}")
        # Wait until the producer's metadata sees them, so the first send does not race.
        producer = self._require()
        for s in todo:
            for _ in range(100):
                parts = await producer.partitions_for(self.wire(s.name))
                if parts and len(parts) == s.partitions:
                    break
                await asyncio.sleep(0.05)

    async def partitions_for(self, topic: str) -> int:
        try:
            parts = await self._require().partitions_for(self.wire(topic))
        except KafkaError as exc:
            raise UnknownTopicError(topic) from exc
        if not parts:
            raise UnknownTopicError(topic)
        return len(parts)


class _KafkaProducer(Producer):
    def __init__(self, log_: KafkaLog) -> None:
        self._log = log_

    async def send(self, topic: str, key: str, value: bytes, headers: dict[str, bytes] | None = None) -> None:
        if not isinstance(key, str):
            raise TypeError("record key must be str")
        check_record_size(key, value, headers)
        producer = self._log._require()
        hdrs = [(k, bytes(v)) for k, v in headers.items()] if headers else None
        try:
            await asyncio.wait_for(
                producer.send_and_wait(self._log.wire(topic), bytes(value), key=key.encode("utf-8"), headers=hdrs),
                self._log.send_timeout_s,
            )
        except asyncio.TimeoutError as exc:
            raise LogError(f"send to {topic} timed out after {self._log.send_timeout_s:.0f}s (broker down?)") from exc
        except KafkaError as exc:
            raise LogError(f"send to {topic} failed: {exc!r}") from exc


class _ListenerBridge(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: "KafkaConsumer") -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[KTP]) -> None:
        parts = {(self._owner._log.unwire(tp.topic), tp.partition) for tp in revoked}
        self._owner._assigned -= parts
        listener = self._owner._listener
        if listener is not None and parts:
            try:
                # Called before the partitions leave us: the hook may still commit.
                self._owner._revoking = parts
                await listener.on_revoked(parts)
            except Exception:
                log.exception("on_revoked hook failed")
            finally:
                self._owner._revoking = set()

    async def on_partitions_assigned(self, assigned: set[KTP]) -> None:
        parts = {(self._owner._log.unwire(tp.topic), tp.partition) for tp in assigned}
        self._owner._assigned |= parts
        listener = self._owner._listener
        if listener is not None and parts:
            try:
                await listener.on_assigned(parts)
            except Exception:
                log.exception("on_assigned hook failed")


class KafkaConsumer(Consumer):
    def __init__(self, log_: KafkaLog, group: str | None, topics: list[str], fixed_partition: int | None = None) -> None:
        self._log = log_
        self._group = group
        self._topics = topics
        self._fixed = fixed_partition
        self._listener: RebalanceListener | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned: set[TopicPartition] = set()
        self._revoking: set[TopicPartition] = set()

    def set_rebalance_listener(self, listener: RebalanceListener) -> None:
        self._listener = listener

    async def start(self) -> None:
        if self._consumer is not None:
            return
        lg = self._log
        opts = dict(lg._consumer_opts) if self._group is not None else {"request_timeout_ms": lg._request_timeout_ms}
        consumer = AIOKafkaConsumer(
            bootstrap_servers=lg.bootstrap_servers,
            client_id=f"{lg.client_id}-{self._group or 'tail'}",
            # Groups are namespaced like topics: deployments (or test clusters) sharing a broker
            # with different prefixes must never join each other's groups (every join there
            # would rebalance the others).
            group_id=lg.wire(self._group) if self._group is not None else None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self._group is not None else "latest",
            fetch_max_wait_ms=200,
            **opts,
        )
        try:
            await consumer.start()
            if self._group is None:
                tp = KTP(lg.wire(self._topics[0]), self._fixed or 0)
                consumer.assign([tp])
                await consumer.seek_to_end(tp)
                await consumer.position(tp)  # resolve now: later records must be seen
                self._assigned = {(self._topics[0], self._fixed or 0)}
            else:
                consumer.subscribe([lg.wire(t) for t in self._topics], listener=_ListenerBridge(self))
        except KafkaError as exc:
            await consumer.stop()
            raise LogError(f"consumer start failed: {exc!r}") from exc
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()  # runs on_partitions_revoked, then leaves the group
        self._assigned = set()

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise LogClosedError("consumer is not started")
        return self._consumer

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        consumer = self._require()
        try:
            batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise LogError(f"fetch failed: {exc!r}") from exc
        out: list[Record] = []
        for tp, msgs in batches.items():
            topic = self._log.unwire(tp.topic)
            for m in msgs:
                key = m.key.decode("utf-8", "replace") if m.key is not None else ""
                headers = {k: bytes(v) for k, v in (m.headers or ())}
                out.append(Record(topic, tp.partition, m.offset, key, m.value or b"", headers, m.timestamp))
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._group is None or not offsets:
            return
        consumer = self._require()
        owned = self._assigned | self._revoking
        mine = {KTP(self._log.wire(t), p): int(o) for (t, p), o in offsets.items() if (t, p) in owned}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except KafkaError as exc:
            raise LogError(f"commit failed: {exc!r}") from exc

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None:
            return set()
        return {(self._log.unwire(tp.topic), tp.partition) for tp in self._consumer.assignment()}

    def highwater(self, tp: TopicPartition) -> int | None:
        if self._consumer is None:
            return None
        return self._consumer.highwater(KTP(self._log.wire(tp[0]), tp[1]))

    async def committed(self, tp: TopicPartition) -> int | None:
        consumer = self._require()
        got = await consumer.committed(KTP(self._log.wire(tp[0]), tp[1]))
        return None if got is None or got < 0 else int(got)

