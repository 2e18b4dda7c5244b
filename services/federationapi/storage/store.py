"""The federationapi's tables (see migrations/001_initial.sql)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from libs.storage import Database

MIGRATIONS = "services.federationapi.storage.migrations"


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class StoredKey:
    server_name: str
    key_id: str
    verify_key: str            # unpadded base64
    valid_until_ts: int
    expired_ts: int | None
    fetched_ts: int

    @property
    def usable_until_ts(self) -> int:
        """Until when events may be signed with it: expired_ts for old keys."""
        return self.expired_ts if self.expired_ts is not None else self.valid_until_ts


@dataclass(frozen=True, slots=True)
class QueuedItem:
    position: int
    destination: str
    kind: str                  # "pdu" | "edu"
    room_id: str | None
    json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DestinationState:
    destination: str
    retry_count: int
    retry_until_ts: int
    last_success_ts: int | None


class FederationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- keys ------------------------------------------------------------------------

    async def get_keys(self, server_name: str) -> dict[str, StoredKey]:
        rows = await self.db.fetch(
            "SELECT server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts "
            "FROM server_keys WHERE server_name = $1", server_name)
        return {r["key_id"]: StoredKey(r["server_name"], r["key_id"], r["verify_key"], r["valid_until_ts"],
                                       r["expired_ts"], r["fetched_ts"]) for r in rows}

    async def store_key_response(self, server_name: str, response: dict[str, Any], valid_until_ts: int,
                                 keys: Sequence[tuple[str, str, int | None]], now_ms: int) -> None:
        """Record a verified response and its keys ((key_id, b64, expired_ts|None)).
        An older response never replaces a newer one."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO server_key_responses (server_name, response, valid_until_ts, fetched_ts) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (server_name) DO UPDATE SET "
                "response = excluded.response, valid_until_ts = excluded.valid_until_ts, "
                "fetched_ts = excluded.fetched_ts "
                "WHERE excluded.valid_until_ts >= server_key_responses.valid_until_ts",
                server_name, _dumps(response), valid_until_ts, now_ms)
            for key_id, b64, expired in keys:
                await conn.execute(
                    "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (server_name, key_id) DO UPDATE SET "
                    "verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts, "
                    "expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts "
                    "WHERE excluded.valid_until_ts >= server_keys.valid_until_ts",
                    server_name, key_id, b64, valid_until_ts, expired, now_ms)

    async def get_key_response(self, server_name: str) -> tuple[dict[str, Any], int] | None:
        row = await self.db.fetchrow(
            "SELECT response, valid_until_ts FROM server_key_responses WHERE server_name = $1", server_name)
        if row is None:
            return None
        return json.loads(row["response"]), row["valid_until_ts"]

    # ---- inbound transactions ------------------------------------------------------------

    async def get_transaction_response(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        v = await self.db.fetchval(
            "SELECT response FROM received_transactions WHERE origin = $1 AND txn_id = $2", origin, txn_id)
        return json.loads(v) if v is not None else None

    async def store_transaction_response(self, origin: str, txn_id: str, response: dict[str, Any],
                                         now_ms: int) -> None:
        await self.db.execute(
            "INSERT INTO received_transactions (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (origin, txn_id) DO NOTHING", origin, txn_id, _dumps(response), now_ms)

    async def prune_transactions(self, before_ms: int) -> None:
        await self.db.execute("DELETE FROM received_transactions WHERE received_ts < $1", before_ms)

    # ---- outbound queue ------------------------------------------------------------------

    async def enqueue(self, items: Sequence[tuple[str, str, str | None, dict[str, Any]]], now_ms: int) -> None:
        """Append (destination, kind, room_id, json) rows."""
        if not items:
            return
        await self.db.executemany(
            "INSERT INTO outbound_queue (destination, kind, room_id, json, created_ts) VALUES ($1, $2, $3, $4, $5)",
            [(d, k, r, _dumps(j), now_ms) for d, k, r, j in items])

    async def pending(self, destination: str, kind: str, limit: int) -> list[QueuedItem]:
        rows = await self.db.fetch(
            "SELECT position, destination, kind, room_id, json FROM outbound_queue "
            "WHERE destination = $1 AND kind = $2 ORDER BY position LIMIT $3", destination, kind, limit)
        return [QueuedItem(r["position"], r["destination"], r["kind"], r["room_id"], json.loads(r["json"]))
                for r in rows]

    async def count_pending(self, destination: str, kind: str) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM outbound_queue WHERE destination = $1 AND kind = $2", destination, kind) or 0)

    async def delete_positions(self, positions: Sequence[int]) -> None:
        if positions:
            await self.db.executemany("DELETE FROM outbound_queue WHERE position = $1", [(p,) for p in positions])

    async def drop_superseded_pdus(self, destination: str) -> int:
        """Catch-up: keep only the newest queued PDU of each room for `destination`."""
        rows = await self.db.fetch(
            "SELECT position, room_id FROM outbound_queue WHERE destination = $1 AND kind = 'pdu' "
            "ORDER BY position DESC", destination)
        seen: set[str | None] = set()
        drop: list[int] = []
        for r in rows:
            if r["room_id"] in seen:
                drop.append(r["position"])
            else:
                seen.add(r["room_id"])
        await self.delete_positions(drop)
        return len(drop)

    async def destinations_with_pending(self) -> list[str]:
        rows = await self.db.fetch("SELECT DISTINCT destination FROM outbound_queue")
        return [r["destination"] for r in rows]

    async def get_destination(self, destination: str) -> DestinationState:
        row = await self.db.fetchrow(
            "SELECT destination, retry_count, retry_until_ts, last_success_ts FROM destinations "
            "WHERE destination = $1", destination)
        if row is None:
            return DestinationState(destination, 0, 0, None)
        return DestinationState(row["destination"], row["retry_count"], row["retry_until_ts"], row["last_success_ts"])

    async def get_device_list(self, user_id: str) -> tuple[int, list[str]] | None:
        """(stream_id, device IDs) of our last device-list update for `user_id`."""
        row = await self.db.fetchrow(
            "SELECT stream_id, device_ids FROM device_list_streams WHERE user_id = $1", user_id)
        if row is None:
            return None
        ids = row["device_ids"]
        return int(row["stream_id"]), list(json.loads(ids) if isinstance(ids, str) else ids)

    async def set_device_list(self, user_id: str, stream_id: int, device_ids: Sequence[str]) -> None:
        await self.db.execute(
            "INSERT INTO device_list_streams (user_id, stream_id, device_ids) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, device_ids = excluded.device_ids",
            user_id, stream_id, _dumps(sorted(device_ids)))

    async def claim_destination(self, destination: str, owner: str, now_ms: int, lease_until_ts: int) -> bool:
        """Take (or renew) the lease on sending to `destination`; False while another
        owner's lease runs."""
        row = await self.db.fetchrow(
            "INSERT INTO destinations (destination, owner, lease_until_ts) VALUES ($1, $2, $3) "
            "ON CONFLICT (destination) DO UPDATE SET owner = excluded.owner, lease_until_ts = excluded.lease_until_ts "
            "WHERE destinations.owner IS NULL OR destinations.owner = excluded.owner "
            "OR destinations.lease_until_ts < $4 RETURNING destination",
            destination, owner, lease_until_ts, now_ms)
        return row is not None

    async def release_destination(self, destination: str, owner: str) -> None:
        await self.db.execute(
            "UPDATE destinations SET owner = NULL, lease_until_ts = 0 WHERE destination = $1 AND owner = $2",
            destination, owner)

    async def set_destination(self, destination: str, retry_count: int, retry_until_ts: int,
                              last_success_ts: int | None, last_error: str | None) -> None:
        await self.db.execute(
            "INSERT INTO destinations (destination, retry_count, retry_until_ts, last_success_ts, last_error) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (destination) DO UPDATE SET retry_count = excluded.retry_count, "
            "retry_until_ts = excluded.retry_until_ts, "
            "last_success_ts = COALESCE(excluded.last_success_ts, destinations.last_success_ts), "
            "last_error = excluded.last_error",
            destination, retry_count, retry_until_ts, last_success_ts, last_error)
