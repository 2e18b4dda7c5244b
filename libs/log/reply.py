"""Request/reply over the log (design rule 7).

The caller (e.g. clientapi handling ``PUT /send``) sends a request record to a
durable topic with two headers, ``axon-correlation-id`` and ``axon-reply-to``, and
waits for the reply with a deadline::

    value = await replies.request(producer, "roomserver.input", room_id, payload, timeout_s=10)

The processor (roomserver), once the effect is committed, answers::

    await sender.reply(record, b'{"event_id": "$..."}')

The reply path is *not* the durable path: a lost reply (caller restarted, reply
record lost) only makes the caller time out (:class:`ReplyTimeout`); it can then
ask the owner through its internal API.  Requests are still processed.

Two channels:

* :class:`InProcessReplies` (embedded mode): a registry of futures; the address is
  ``inproc:<uuid>`` and a :class:`ReplySender` built with ``local=`` that registry
  resolves the future directly, without touching the log.
* :class:`LogReplies` (cluster mode, works on any :class:`EventLog`): one shared
  ``replies`` topic with short retention, keyed by caller instance id.  The
  address is ``log:<topic>:<instance_id>``; the sender produces the reply with
  key = instance id, so it lands on partition ``partition_for(instance_id, n)``,
  and each caller instance reads only that partition with a groupless tail
  reader (no group membership, no rebalances, no commits) and ignores records
  of other instances sharing the partition.  We chose this over a topic per
  instance because instances come and go (Kubernetes pods): per-instance topics
  would pile up in the broker and need cleanup, while one topic with a fixed
  partition count needs none; the cost is reading the few replies of instances
  that hash to the same partition.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from .api import Consumer, EventLog, LogError, Producer, Record, TopicSpec, partition_for

log = logging.getLogger(__name__)

HEADER_CORRELATION = "axon-correlation-id"
HEADER_REPLY_TO = "axon-reply-to"


class ReplyTimeout(LogError):
    """No reply arrived before the deadline."""


class ReplyChannel:
    """The caller side: where replies for this instance arrive."""

    address: str

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    def new_request(self) -> tuple[str, dict[str, bytes], asyncio.Future[bytes]]:
        """Register a pending reply: (correlation id, headers to attach, future)."""
        corr = uuid.uuid4().hex
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        headers = {HEADER_CORRELATION: corr.encode(), HEADER_REPLY_TO: self.address.encode()}
        return corr, headers, fut

    def forget(self, corr: str) -> None:
        self._pending.pop(corr, None)

    async def request(
        self,
        producer: Producer,
        topic: str,
        key: str,
        value: bytes,
        headers: dict[str, bytes] | None = None,
        timeout_s: float = 10.0,
    ) -> bytes:
        """Send a request record and wait for its reply (raises :class:`ReplyTimeout`)."""
        corr, reply_headers, fut = self.new_request()
        try:
            await producer.send(topic, key, value, {**(headers or {}), **reply_headers})
            try:
                return await asyncio.wait_for(fut, timeout_s)
            except asyncio.TimeoutError as exc:
                raise ReplyTimeout(f"no reply to {corr} within {timeout_s}s") from exc
        finally:
            self.forget(corr)

    def _resolve(self, corr: str, value: bytes) -> bool:
        fut = self._pending.get(corr)
        if fut is None or fut.done():
            return False  # late (caller gave up) or not ours
        fut.set_result(value)
        return True


class InProcessReplies(ReplyChannel):
    """Embedded mode: replies are delivered straight to in-process futures."""

    def __init__(self) -> None:
        super().__init__()
        self.address = f"inproc:{uuid.uuid4().hex}"

    def deliver(self, corr: str, value: bytes) -> bool:
        return self._resolve(corr, value)


class LogReplies(ReplyChannel):
    """Cluster mode: replies travel on a shared short-retention ``replies`` topic."""

    def __init__(
        self,
        log_: EventLog,
        instance_id: str,
        *,
        topic: str = "replies",
        partitions: int = 8,
        retention_ms: int = 60_000,
    ) -> None:
        super().__init__()
        if ":" in topic:
            raise ValueError("reply topic must not contain ':'")
        self._log = log_
        self.instance_id = instance_id
        self.topic = topic
        self._partitions = partitions
        self._retention_ms = retention_ms
        self.address = f"log:{topic}:{instance_id}"
        self._task: asyncio.Task[None] | None = None
        self._reader: Consumer | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        await self._log.ensure_topics([TopicSpec(self.topic, self._partitions, self._retention_ms)])
        n = await self._log.partitions_for(self.topic)
        self._reader = self._log.tail(self.topic, partition_for(self.instance_id, n))
        await self._reader.start()  # positioned at the end before any request is sent
        self._task = asyncio.create_task(self._read_loop(), name=f"replies-{self.instance_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        await super().stop()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        while True:
            try:
                records = await self._reader.getmany(1000, 500)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reply reader failed; retrying")
                await asyncio.sleep(0.5)
                continue
            for rec in records:
                if rec.key != self.instance_id:
                    continue
                corr = rec.headers.get(HEADER_CORRELATION)
                if corr is not None:
                    self._resolve(corr.decode("utf-8", "replace"), rec.value)


class ReplySender:
    """The processor side: answers a request record at the address it carries."""

    def __init__(self, producer: Producer | None, local: InProcessReplies | None = None) -> None:
        self._producer = producer
        self._local = local

    async def reply(self, request: Record | dict[str, bytes], value: bytes) -> bool:
        """Send ``value`` as the reply to ``request`` (a record or its headers).

        Returns False when the request asked for no reply or the address is not
        reachable from here; never raises for a bad address (the caller times out)."""
        headers = request.headers if isinstance(request, Record) else request
        corr_raw = headers.get(HEADER_CORRELATION)
        to_raw = headers.get(HEADER_REPLY_TO)
        if corr_raw is None or to_raw is None:
            return False
        corr = corr_raw.decode("utf-8", "replace")
        to = to_raw.decode("utf-8", "replace")
        if to.startswith("inproc:"):
            if self._local is not None and self._local.address == to:
                self._local.deliver(corr, value)
                return True
            log.warning("reply to unknown in-process address %s dropped", to)
            return False
        if to.startswith("log:") and self._producer is not None:
            parts = to.split(":", 2)
            if len(parts) == 3 and parts[1] and parts[2]:
                await self._producer.send(parts[1], parts[2], value, {HEADER_CORRELATION: corr_raw})
                return True
        log.warning("reply address %r not usable here; reply dropped", to)
        return False
