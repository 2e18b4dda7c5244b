"""The appservice service's tables: a per-AS queue of events and its delivery state."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from libs.storage import Database
from libs.storage.errors import UniqueViolation

MIGRATIONS = "services.appservice.storage.migrations"


@dataclass(frozen=True)
class Transaction:
    txn_id: int
    upto_seq: int
    events: list[dict[str, Any]]


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(self, as_id: str, event_id: str, event: dict[str, Any]) -> bool:
        """Queue an event for an AS; False if it was queued already (redelivered record)."""
        try:
            await self.db.execute(
                "INSERT INTO as_queue (as_id, event_id, event_json) VALUES ($1, $2, $3)",
                as_id, event_id, json.dumps(event))
        except UniqueViolation:
            return False
        return True

    async def queued(self, as_id: str) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM as_queue WHERE as_id = $1", as_id) or 0)

    async def next_transaction(self, as_id: str, max_events: int) -> Transaction | None:
        """The transaction to (re)send: the pending one, else a new one of the oldest events."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT next_txn_id, pending_txn_id, pending_upto_seq FROM as_state WHERE as_id = $1", as_id)
            if row is not None and row["pending_txn_id"] is not None:
                txn_id, upto = int(row["pending_txn_id"]), int(row["pending_upto_seq"])
                rows = await conn.fetch(
                    "SELECT event_json FROM as_queue WHERE as_id = $1 AND seq <= $2 ORDER BY seq", as_id, upto)
                return Transaction(txn_id, upto, [json.loads(r["event_json"]) for r in rows])
            rows = await conn.fetch(
                "SELECT seq, event_json FROM as_queue WHERE as_id = $1 ORDER BY seq LIMIT $2", as_id, max_events)
            if not rows:
                return None
            txn_id = int(row["next_txn_id"]) if row is not None else 1
            upto = int(rows[-1]["seq"])
            await conn.execute(
                "INSERT INTO as_state (as_id, next_txn_id, pending_txn_id, pending_upto_seq) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (as_id) DO UPDATE SET next_txn_id = excluded.next_txn_id,"
                " pending_txn_id = excluded.pending_txn_id, pending_upto_seq = excluded.pending_upto_seq",
                as_id, txn_id + 1, txn_id, upto)
            return Transaction(txn_id, upto, [json.loads(r["event_json"]) for r in rows])

    async def complete(self, as_id: str, txn: Transaction) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM as_queue WHERE as_id = $1 AND seq <= $2", as_id, txn.upto_seq)
            await conn.execute(
                "UPDATE as_state SET pending_txn_id = NULL, pending_upto_seq = NULL"
                " WHERE as_id = $1 AND pending_txn_id = $2", as_id, txn.txn_id)

    # ---- AS room directories -------------------------------------------------------
    async def publish_room(self, network: str, room_id: str, public: bool) -> None:
        if public:
            await self.db.execute(
                "INSERT INTO as_room_list (network, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                network, room_id)
        else:
            await self.db.execute("DELETE FROM as_room_list WHERE network = $1 AND room_id = $2", network, room_id)

    async def network_rooms(self, network: str | None) -> list[str]:
        """Rooms of one network's list, or of every AS list (None)."""
        if network is None:
            rows = await self.db.fetch("SELECT DISTINCT room_id FROM as_room_list")
        else:
            rows = await self.db.fetch("SELECT room_id FROM as_room_list WHERE network = $1", network)
        return [r["room_id"] for r in rows]
