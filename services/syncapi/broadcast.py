"""Cross-replica position broadcast for the cluster (PostgreSQL LISTEN/NOTIFY).

Every syncapi replica serves /sync, but only the replica that projected a record
advances its in-memory positions and wakes its own long-polls. On PostgreSQL the
writer also sends ``NOTIFY`` inside its transaction (delivered only if it commits,
after the commit); every replica LISTENs and applies the same advance + wake-up.
On SQLite (one process) there is nothing to broadcast.
"""
from __future__ import annotations

import json
import logging
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
    """Holds one pooled connection LISTENing on the syncapi channel."""

    def __init__(self, db: Database, positions: Positions, notifier: Notifier,
                 activity: SyncActivity | None = None) -> None:
        self.db = db
        self.channel = channel_for(db)
        self.positions = positions
        self.notifier = notifier
        self.activity = activity
        self._conn: Any = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if not apply_payload(payload, self.positions, self.notifier, self.activity):
            log.warning("ignoring malformed sync position announcement %r", payload[:200])

    async def start(self) -> None:
        if self.channel is None:
            return
        pool = getattr(self.db, "pool")
        self._conn = await pool.acquire()
        await self._conn.add_listener(self.channel, self._on_notify)

    async def stop(self) -> None:
        if self._conn is None:
            return
        try:
            await self._conn.remove_listener(self.channel, self._on_notify)
        finally:
            await getattr(self.db, "pool").release(self._conn)
            self._conn = None
