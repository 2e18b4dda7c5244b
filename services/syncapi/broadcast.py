"""Cross-replica position broadcast for the cluster (PostgreSQL LISTEN/NOTIFY).

Every syncapi replica serves /sync, but only the replica that projected a record
advances its in-memory positions and wakes its own long-polls. On PostgreSQL the
writer also sends ``NOTIFY`` inside its transaction (delivered only if it commits,
after the commit); every replica LISTENs and applies the same advance + wake-up.
On SQLite (one process) there is nothing to broadcast.

The LISTEN connection can die (PostgreSQL restarted, network cut): the listener then
re-LISTENs on a fresh connection with backoff, and calls ``on_reconnect`` — the
announcements sent while it was deaf are lost, so the owner must re-read its
positions from the database and stop trusting what it noted in memory.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from libs.storage import Connection, Database
from services.syncapi.activity import SyncActivity
from services.syncapi.streams import Notifier, Positions

log = logging.getLogger(__name__)

_STREAMS = {"events", "receipts", "to_device", "account_data", "device_lists"}


def channel_for(db: Database) -> str | None:
    """The NOTIFY channel of this syncapi database (per schema), or None off PostgreSQL."""
    if db.dialect != "postgres":
        return None
    return f"axon_sync_{getattr(db, 'schema', 'syncapi')}"


async def publish(conn: Connection, channel: str | None, stream: str, pos: int, keys: list[str]) -> None:
    """Queue a position announcement in the caller's transaction."""
    if channel is None:
        return
    payload = json.dumps({"s": stream, "p": pos, "k": keys})
    if len(payload) > 7000:  # NOTIFY payloads are limited to 8000 bytes
        payload = json.dumps({"s": stream, "p": pos, "k": keys[:1]})
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


def apply_payload(payload: str, positions: Positions, notifier: Notifier,
                  activity: SyncActivity | None = None) -> bool:
    """Apply one announcement; False (and nothing done) if it is malformed."""
    try:
        obj = json.loads(payload)
        stream, pos, keys = obj["s"], obj["p"], obj["k"]
    except (ValueError, KeyError, TypeError):
        return False
    if stream not in _STREAMS or not isinstance(pos, int) or not isinstance(keys, list):
        return False
    keys = [k for k in keys if isinstance(k, str)]
    if activity is not None:
        activity.note(stream, pos, keys)
    positions.advance(stream, pos)
    notifier.notify(keys)
    return True


class PgPositionListener:
    """Holds one pooled connection LISTENing on the syncapi channel (re-LISTENs if it dies)."""

    def __init__(self, db: Database, positions: Positions, notifier: Notifier,
                 activity: SyncActivity | None = None, *,
                 on_reconnect: Callable[[], Awaitable[None]] | None = None,
                 backoff_initial_s: float = 0.2, backoff_max_s: float = 5.0) -> None:
        self.db = db
        self.channel = channel_for(db)
        self.positions = positions
        self.notifier = notifier
        self.activity = activity
        self.on_reconnect = on_reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.reconnects = 0
        self._conn: Any = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if not apply_payload(payload, self.positions, self.notifier, self.activity):
            log.warning("ignoring malformed sync position announcement %r", payload[:200])

    def _on_terminated(self, conn: Any) -> None:
        if self._stopping or self._task is not None:
            return
        log.warning("sync position LISTEN connection lost; re-listening")
        self._task = asyncio.get_running_loop().create_task(self._relisten(conn), name="syncapi-relisten")

    async def _listen(self) -> None:
        pool = getattr(self.db, "pool")
        conn = await pool.acquire()
        try:
            conn.add_termination_listener(self._on_terminated)
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            await self._release(conn)
            raise
        self._conn = conn

    async def _release(self, conn: Any) -> None:
        try:
            await getattr(self.db, "pool").release(conn)
        except Exception:  # a dead connection: the pool replaces it on the next acquire
            log.debug("releasing the dead LISTEN connection failed", exc_info=True)

    async def _relisten(self, dead: Any) -> None:
        try:
            if self._conn is dead:
                self._conn = None
            await self._release(dead)
            delay = self.backoff_initial_s
            while not self._stopping:
                try:
                    await self._listen()
                    if self.on_reconnect is not None:
                        await self.on_reconnect()
                    if self._conn is None or self._conn.is_closed():
                        raise ConnectionError("LISTEN connection lost again while resyncing")
                    self.reconnects += 1
                    log.warning("sync position LISTEN re-established")
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    # (the connection may have died again while resyncing: drop it, retry)
                    if self._conn is not None:
                        conn, self._conn = self._conn, None
                        await self._release(conn)
                    log.warning("re-LISTEN failed (%r); retrying in %.1fs", e, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max_s)
        finally:
            self._task = None

    async def start(self) -> None:
        if self.channel is None:
            return
        self._stopping = False
        await self._listen()

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.remove_termination_listener(self._on_terminated)
            await conn.remove_listener(self.channel, self._on_notify)
        except Exception:
            log.debug("unlisten failed (connection gone)", exc_info=True)
        finally:
            await self._release(conn)
