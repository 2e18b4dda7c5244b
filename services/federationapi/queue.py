"""Outbound per-destination queue: persisted rows, one worker per destination.

Whoever has something for remote servers calls `enqueue_pdu` / `enqueue_edu`; the rows
are committed in `outbound_queue`. Each replica runs the workers of the destinations
it owns (`partition_for(destination, shard_count) == shard_index`), and a worker runs
only while it holds the destination's lease in `destinations` (renewed on every round,
released when idle; a dead replica's lease expires after LEASE_MS), so replicas with
the same shard settings (a Deployment's) never send to one destination twice; a worker sends
transactions of up to 50 PDUs and 100 EDUs, oldest first, deletes them once the
destination answered 200, and otherwise backs off exponentially (persisted in
`destinations`, so a restart keeps the backoff). Catch-up: when a destination comes
back after failures with more than `catchup_max_pdus` queued PDUs, only the newest PDU
of each room is kept — the remote fills the gap with /get_missing_events.
A transaction's ID is derived from the positions it carries, so a retry of the same
batch is deduplicated by the receiver.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Callable

from libs.config.model import FederationConfig
from libs.log.api import partition_for

from .client import FederationError, FederationHTTPError
from .storage.store import FederationStore

log = logging.getLogger(__name__)

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
LEASE_MS = 120_000


def _now_ms() -> int:
    return int(time.time() * 1000)


class OutboundQueue:
    def __init__(self, server_name: str, store: FederationStore, client: Any, cfg: FederationConfig, *,
                 clock_ms: Callable[[], int] = _now_ms, poll_interval_s: float = 5.0,
                 instance_id: str | None = None) -> None:
        self.server_name = server_name
        self.instance_id = instance_id or uuid.uuid4().hex
        self.store = store
        self.client = client
        self.cfg = cfg
        self.clock_ms = clock_ms
        self.poll_interval_s = poll_interval_s
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._scanner: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent_transactions = 0

    def owns(self, destination: str) -> bool:
        n = max(1, self.cfg.shard_count)
        return partition_for(destination, n) == self.cfg.shard_index % n

    # ---- producing -------------------------------------------------------------------

    async def enqueue_pdu(self, destinations: set[str] | list[str], pdu: dict[str, Any]) -> None:
        dests = sorted(d for d in set(destinations) if d and d != self.server_name)
        room_id = pdu.get("room_id") if isinstance(pdu.get("room_id"), str) else None
        await self.store.enqueue([(d, "pdu", room_id, pdu) for d in dests], self.clock_ms())
        self._notify(dests)

    async def enqueue_edu(self, destinations: set[str] | list[str], edu_type: str, content: dict[str, Any]) -> None:
        dests = sorted(d for d in set(destinations) if d and d != self.server_name)
        edu = {"edu_type": edu_type, "content": content}
        await self.store.enqueue([(d, "edu", None, edu) for d in dests], self.clock_ms())
        self._notify(dests)

    def _notify(self, destinations: list[str]) -> None:
        if self._stopping or self._scanner is None:
            return
        for d in destinations:
            if self.owns(d):
                self._ensure_worker(d)

    # ---- running ---------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._scanner = asyncio.create_task(self._scan_loop(), name="federation-queue-scanner")

    async def stop(self) -> None:
        self._stopping = True
        held = list(self._workers)
        tasks = [t for t in [self._scanner, *self._workers.values()] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._scanner = None
        for d in held:  # let another replica take over at once
            try:
                await self.store.release_destination(d, self.instance_id)
            except Exception as e:
                log.info("releasing %s failed: %s", d, e)

    async def _scan_loop(self) -> None:
        # Rows enqueued by other replicas (or before a restart) are found by polling.
        while not self._stopping:
            try:
                for d in await self.store.destinations_with_pending():
                    if self.owns(d):
                        self._ensure_worker(d)
            except Exception as e:
                log.warning("federation queue scan failed: %s", e)
            await asyncio.sleep(self.poll_interval_s)

    def _ensure_worker(self, destination: str) -> None:
        ev = self._wake.setdefault(destination, asyncio.Event())
        ev.set()
        task = self._workers.get(destination)
        if task is None or task.done():
            self._workers[destination] = asyncio.create_task(self._worker(destination),
                                                             name=f"federation-queue:{destination}")

    def backoff_ms(self, retry_count: int) -> int:
        if retry_count <= 0:
            return 0
        s = self.cfg.retry_initial_backoff_s * (2 ** min(retry_count - 1, 30))
        return int(min(s, self.cfg.retry_max_backoff_s) * 1000)

    async def _worker(self, destination: str) -> None:
        wake = self._wake.setdefault(destination, asyncio.Event())
        while not self._stopping:
            wake.clear()
            try:
                now = self.clock_ms()
                if not await self.store.claim_destination(destination, self.instance_id, now, now + LEASE_MS):
                    self._workers.pop(destination, None)
                    return  # another replica sends to it; the scanner looks again later
                more = await self.send_once(destination)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # storage trouble: wait for the next poll
                log.warning("federation queue for %s failed: %s", destination, e)
                more = False
            if more:
                continue
            state = await self.store.get_destination(destination)
            delay = max(0.0, (state.retry_until_ts - self.clock_ms()) / 1000)
            if delay <= 0 and not await self._has_pending(destination):
                self._workers.pop(destination, None)
                await self.store.release_destination(destination, self.instance_id)
                if wake.is_set() and destination not in self._workers:
                    # An enqueue came while we were leaving (it saw this task alive and
                    # only woke it): start over rather than wait for the scanner's poll.
                    self._ensure_worker(destination)
                return  # idle: a new enqueue or the scanner starts a new worker
            try:
                await asyncio.wait_for(wake.wait(), timeout=delay if delay > 0 else self.poll_interval_s)
            except asyncio.TimeoutError:
                pass

    async def _has_pending(self, destination: str) -> bool:
        return (await self.store.count_pending(destination, "pdu")
                + await self.store.count_pending(destination, "edu")) > 0

    async def send_once(self, destination: str) -> bool:
        """Send one transaction if due. True if it went through and more may be queued."""
        state = await self.store.get_destination(destination)
        now = self.clock_ms()
        if state.retry_until_ts > now:
            return False
        if state.retry_count > 0 and await self.store.count_pending(destination, "pdu") > self.cfg.catchup_max_pdus:
            dropped = await self.store.drop_superseded_pdus(destination)
            log.info("catch-up for %s: dropped %d superseded PDUs", destination, dropped)
        pdus = await self.store.pending(destination, "pdu", MAX_PDUS_PER_TXN)
        edus = await self.store.pending(destination, "edu", MAX_EDUS_PER_TXN)
        if not pdus and not edus:
            return False
        positions = [i.position for i in pdus] + [i.position for i in edus]
        txn_id = f"{min(positions)}-{max(positions)}-{len(positions)}"
        body = {"origin": self.server_name, "origin_server_ts": now,
                "pdus": [i.json for i in pdus], "edus": [i.json for i in edus]}
        try:
            await self.client.put_json(destination, f"/_matrix/federation/v1/send/{txn_id}", body)
        except (FederationError, OSError) as e:
            retries = state.retry_count + 1
            if isinstance(e, FederationHTTPError) and 400 <= e.status < 500 and e.status not in (401, 403, 429):
                # The destination refuses this batch outright; retrying it would block the queue forever.
                log.warning("%s refused transaction %s (%s): dropping it", destination, txn_id, e)
                await self.store.delete_positions(positions)
                await self.store.set_destination(destination, 0, 0, None, str(e)[:500])
                return True
            await self.store.set_destination(destination, retries, now + self.backoff_ms(retries), None,
                                             str(e)[:500])
            log.info("sending to %s failed (%s): retry %d in %d ms", destination, e, retries,
                     self.backoff_ms(retries))
            return False
        await self.store.delete_positions(positions)
        await self.store.set_destination(destination, 0, 0, self.clock_ms(), None)
        self.sent_transactions += 1
        return True
