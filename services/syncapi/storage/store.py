"""The syncapi's SQL, each query written once for PostgreSQL and SQLite.

Positions: `stream_ids` holds the last allocated position per stream. Allocation is
an UPDATE ... RETURNING inside the writer's transaction, so the row lock (PostgreSQL)
or the single writer (SQLite) makes positions commit in increasing order: a reader
that sees position N has seen every position below N.
"""
from __future__ import annotations

import json

import orjson
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from libs.storage import Connection, Database, Row

STREAMS = ("events", "receipts", "to_device", "account_data", "device_lists")
MIGRATIONS_PACKAGE = "services.syncapi.storage.migrations"


def in_list(start: int, n: int) -> str:
    """`$start, $start+1, ...` for an IN (...) list of n values (both dialects)."""
    return ", ".join(f"${i}" for i in range(start, start + n))


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class EventRow:
    event_id: str
    room_id: str
    stream_pos: int | None
    type: str
    state_key: str | None
    sender: str
    origin_server_ts: int
    pdu: dict[str, Any]
    device_id: str | None
    txn_id: str | None
    redacted_by: str | None


_EVENT_COLS = (
    "event_id, room_id, stream_pos, type, state_key, sender, origin_server_ts, json, "
    "device_id, txn_id, redacted_by"
)


def _event_row(r: Row) -> EventRow:
    return EventRow(
        event_id=r["event_id"], room_id=r["room_id"], stream_pos=r["stream_pos"], type=r["type"],
        state_key=r["state_key"], sender=r["sender"], origin_server_ts=r["origin_server_ts"],
        pdu=orjson.loads(r["json"]), device_id=r["device_id"], txn_id=r["txn_id"],
        redacted_by=r["redacted_by"],
    )


@dataclass
class StateDelta:
    room_id: str
    stream_pos: int
    type: str
    state_key: str
    event_id: str | None
    prev_event_id: str | None
    membership: str | None


def _delta(r: Row) -> StateDelta:
    return StateDelta(r["room_id"], r["stream_pos"], r["type"], r["state_key"], r["event_id"],
                      r["prev_event_id"], r["membership"])


@dataclass
class MembershipRow:
    room_id: str
    membership: str
    event_id: str
    stream_pos: int


@dataclass
class ReceiptRow:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    ts: int
    stream_pos: int


@dataclass
class ToDeviceRow:
    stream_pos: int
    sender: str
    type: str
    content: dict[str, Any]


class SyncStore:
    """All syncapi SQL. Write methods take the transaction's connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # A room's version never changes: cached for the process's lifetime.
        self._versions: dict[str, str] = {}

    # ---- positions ----------------------------------------------------------
    async def next_pos(self, conn: Connection, stream: str) -> int:
        return int(await conn.fetchval(
            "UPDATE stream_ids SET pos = pos + 1 WHERE stream = $1 RETURNING pos", stream))

    async def positions(self) -> dict[str, int]:
        rows = await self.db.fetch("SELECT stream, pos FROM stream_ids")
        return {r["stream"]: int(r["pos"]) for r in rows}

    # ---- rooms and events (writes) -----------------------------------------
    async def room_version(self, room_id: str) -> str | None:
        return await self.db.fetchval("SELECT room_version FROM rooms WHERE room_id = $1", room_id)

    async def room_versions(self, room_ids: Sequence[str]) -> dict[str, str]:
        out = {r: self._versions[r] for r in room_ids if r in self._versions}
        missing = [r for r in room_ids if r not in out]
        for chunk in _chunks(missing):
            rows = await self.db.fetch(
                f"SELECT room_id, room_version FROM rooms WHERE room_id IN ({in_list(1, len(chunk))})",
                *chunk)
            out.update({r["room_id"]: r["room_version"] for r in rows})
        self._versions.update(out)
        return out

    async def upsert_room(self, conn: Connection, room_id: str, version: str, last_event_id: str | None) -> None:
        await conn.execute(
            "INSERT INTO rooms (room_id, room_version, last_event_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (room_id) DO UPDATE SET last_event_id = COALESCE($3, rooms.last_event_id)",
            room_id, version, last_event_id)

    async def known_event_ids(self, event_ids: Sequence[str], conn: Connection | None = None) -> set[str]:
        c = conn or self.db
        found: set[str] = set()
        for chunk in _chunks(list(event_ids)):
            rows = await c.fetch(
                f"SELECT event_id FROM events WHERE event_id IN ({in_list(1, len(chunk))})", *chunk)
            found.update(r["event_id"] for r in rows)
        return found

    async def insert_event(
        self, conn: Connection, *, event_id: str, room_id: str, stream_pos: int | None, pdu: dict[str, Any],
        device_id: str | None = None, txn_id: str | None = None,
    ) -> None:
        sk = pdu.get("state_key")
        ts = pdu.get("origin_server_ts")
        await conn.execute(
            "INSERT INTO events (event_id, room_id, stream_pos, type, state_key, sender, origin_server_ts, "
            "json, device_id, txn_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (event_id) DO NOTHING",
            event_id, room_id, stream_pos, str(pdu.get("type", "")), sk if isinstance(sk, str) else None,
            str(pdu.get("sender", "")), ts if isinstance(ts, int) and not isinstance(ts, bool) else 0,
            dumps(pdu), device_id, txn_id)

    async def promote_event(self, conn: Connection, event_id: str, stream_pos: int, pdu: dict[str, Any],
                            device_id: str | None, txn_id: str | None) -> None:
        """Give a state-only event (fetched earlier) its timeline position."""
        await conn.execute(
            "UPDATE events SET stream_pos = $2, json = $3, device_id = $4, txn_id = $5 "
            "WHERE event_id = $1 AND stream_pos IS NULL",
            event_id, stream_pos, dumps(pdu), device_id, txn_id)

    async def reserve_position(self, conn: Connection, stream: str, event_id: str, in_timeline: bool
                               ) -> tuple[int, tuple[bool, bool, str | None]]:
        """`next_pos(stream)` and `event_status(event_id)` in one round trip on SQLite
        (the UPDATE is deferred to the SELECT), except that no position is taken for
        an event already in the timeline when `in_timeline` (a redelivery). Returns
        (the stream's top position afterwards, status)."""
        await conn.execute(
            "UPDATE stream_ids SET pos = pos + 1 WHERE stream = $1 AND ($3 = FALSE OR NOT EXISTS"
            " (SELECT 1 FROM events WHERE event_id = $2 AND stream_pos IS NOT NULL))",
            stream, event_id, in_timeline)
        r = await conn.fetchrow(
            "SELECT (SELECT pos FROM stream_ids WHERE stream = $1),"
            " (SELECT COUNT(*) FROM events WHERE event_id = $2),"
            " (SELECT COUNT(*) FROM events WHERE event_id = $2 AND stream_pos IS NOT NULL),"
            " (SELECT redaction_id FROM redactions WHERE redacts = $2 ORDER BY redaction_id LIMIT 1)",
            stream, event_id)
        assert r is not None
        return int(r[0]), (bool(r[1]), bool(r[2]), r[3])

    async def event_status(self, conn: Connection, event_id: str) -> tuple[bool, bool, str | None]:
        """(known here, has a timeline position, a redaction already waiting for it),
        in one round trip."""
        r = await conn.fetchrow(
            "SELECT (SELECT COUNT(*) FROM events WHERE event_id = $1),"
            " (SELECT COUNT(*) FROM events WHERE event_id = $1 AND stream_pos IS NOT NULL),"
            " (SELECT redaction_id FROM redactions WHERE redacts = $1 ORDER BY redaction_id LIMIT 1)",
            event_id)
        assert r is not None
        return bool(r[0]), bool(r[1]), r[2]

    async def timeline_event_exists(self, conn: Connection, event_id: str) -> bool:
        return await conn.fetchval(
            "SELECT 1 FROM events WHERE event_id = $1 AND stream_pos IS NOT NULL", event_id) is not None

    async def add_redaction(self, conn: Connection, redaction_id: str, redacts: str) -> None:
        await conn.execute(
            "INSERT INTO redactions (redaction_id, redacts) VALUES ($1, $2) ON CONFLICT (redaction_id) DO NOTHING",
            redaction_id, redacts)

    async def mark_redacted(self, conn: Connection, event_id: str, redaction_id: str) -> None:
        await conn.execute(
            "UPDATE events SET redacted_by = $2 WHERE event_id = $1 AND redacted_by IS NULL",
            event_id, redaction_id)

    async def pending_redaction_for(self, conn: Connection, event_id: str) -> str | None:
        return await conn.fetchval(
            "SELECT redaction_id FROM redactions WHERE redacts = $1 ORDER BY redaction_id LIMIT 1", event_id)

    # ---- state (writes) -----------------------------------------------------
    async def current_state_for_keys(
        self, conn: Connection, room_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for t, sk in keys:
            eid = await conn.fetchval(
                "SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
                room_id, t, sk)
            if eid is not None:
                out[(t, sk)] = eid
        return out

    async def current_state_keys_of(self, conn: Connection, room_id: str, event_ids: Sequence[str]
                                    ) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(list(event_ids)):
            rows = await conn.fetch(
                f"SELECT event_id, type, state_key FROM current_state WHERE room_id = $1 "
                f"AND event_id IN ({in_list(2, len(chunk))})", room_id, *chunk)
            out.update({r["event_id"]: (r["type"], r["state_key"]) for r in rows})
        return out

    async def set_state(self, conn: Connection, room_id: str, pos: int, key: tuple[str, str],
                        event_id: str | None, prev_event_id: str | None, membership: str | None) -> None:
        t, sk = key
        if event_id is None:
            await conn.execute(
                "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3", room_id, t, sk)
        else:
            await conn.execute(
                "INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, type, state_key) DO UPDATE SET "
                "event_id = $4, membership = $5, stream_pos = $6",
                room_id, t, sk, event_id, membership, pos)
        await conn.execute(
            "INSERT INTO state_deltas (room_id, stream_pos, type, state_key, event_id, prev_event_id, membership) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            room_id, pos, t, sk, event_id, prev_event_id, membership)

    # ---- reads: events ------------------------------------------------------
    async def events_by_ids_conn(self, conn: Connection, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(dict.fromkeys(event_ids))):
            rows = await conn.fetch(
                f"SELECT event_id, json FROM events WHERE event_id IN ({in_list(1, len(chunk))})", *chunk)
            out.update({r["event_id"]: orjson.loads(r["json"]) for r in rows})
        return out

    async def events_by_ids(self, event_ids: Sequence[str]) -> dict[str, EventRow]:
        out: dict[str, EventRow] = {}
        for chunk in _chunks(list(dict.fromkeys(event_ids))):
            rows = await self.db.fetch(
                f"SELECT {_EVENT_COLS} FROM events WHERE event_id IN ({in_list(1, len(chunk))})", *chunk)
            for r in rows:
                out[r["event_id"]] = _event_row(r)
        return out

    async def room_events(self, room_id: str, *, after: int, upto: int, limit: int, backwards: bool
                          ) -> list[EventRow]:
        """Timeline events with after < stream_pos <= upto, newest first if backwards."""
        order = "DESC" if backwards else "ASC"
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLS} FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 "
            f"ORDER BY stream_pos {order} LIMIT $4", room_id, after, upto, limit)
        return [_event_row(r) for r in rows]

    async def earliest_room_event(self, room_id: str) -> EventRow | None:
        """The room's timeline event with the lowest position (backfilled ones included)."""
        r = await self.db.fetchrow(
            f"SELECT {_EVENT_COLS} FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL "
            "ORDER BY stream_pos LIMIT 1", room_id)
        return None if r is None else _event_row(r)

    async def insert_historical(self, room_id: str, pdus: Sequence[dict[str, Any]]) -> int:
        """Backfilled events (newest first) at fresh negative positions, each below every
        position taken so far; events already in the timeline are left alone, state-only
        ones get their position. Current state and the events stream are untouched.
        Returns how many were placed."""
        placed = 0
        async with self.db.transaction() as tx:
            ids = [str(p["event_id"]) for p in pdus]
            positioned = set(await self.stream_positions_of(tx, ids))
            known = await self.known_event_ids(ids, tx)
            for pdu in pdus:
                eid = str(pdu["event_id"])
                if eid in positioned:
                    continue
                pos = -await self.next_pos(tx, "backfill")
                if eid in known:
                    await self.promote_event(tx, eid, pos, pdu, None, None)
                else:
                    await self.insert_event(tx, event_id=eid, room_id=room_id, stream_pos=pos, pdu=pdu)
                positioned.add(eid)
                placed += 1
                pending = await self.pending_redaction_for(tx, eid)  # a redaction we already hold
                if pending:
                    await self.mark_redacted(tx, eid, pending)
                if pdu.get("type") == "m.room.redaction":
                    c = pdu.get("content")
                    target = c.get("redacts") if isinstance(c, dict) else None
                    target = target if isinstance(target, str) else pdu.get("redacts")
                    if isinstance(target, str):
                        await self.add_redaction(tx, eid, target)
                        await self.mark_redacted(tx, target, eid)
        return placed

    async def rooms_with_events(self, room_ids: Sequence[str], after: int, upto: int) -> set[str]:
        out: set[str] = set()
        if after >= upto:
            return out
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                f"SELECT DISTINCT room_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2 "
                f"AND room_id IN ({in_list(3, len(chunk))})", after, upto, *chunk)
            out.update(r["room_id"] for r in rows)
        return out

    async def event_pos(self, event_id: str) -> tuple[str, int] | None:
        r = await self.db.fetchrow(
            "SELECT room_id, stream_pos FROM events WHERE event_id = $1 AND stream_pos IS NOT NULL", event_id)
        return None if r is None else (r["room_id"], int(r["stream_pos"]))

    async def unread_counts(self, room_id: str, after: int, upto: int, user_id: str, mention: str
                            ) -> tuple[int, int]:
        """(messages, messages whose JSON mentions `mention`) after `after`, not sent by the user."""
        r = await self.db.fetchrow(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN json LIKE $5 THEN 1 ELSE 0 END), 0) AS h "
            "FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 "
            "AND sender <> $4 AND type IN ('m.room.message', 'm.room.encrypted') AND redacted_by IS NULL",
            room_id, after, upto, user_id, f"%{mention}%")
        return (int(r["n"]), int(r["h"])) if r is not None else (0, 0)

    # ---- reads: state -------------------------------------------------------
    async def current_state(self, room_id: str) -> dict[tuple[str, str], str]:
        rows = await self.db.fetch(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = $1", room_id)
        return {(r["type"], r["state_key"]): r["event_id"] for r in rows}

    async def current_members(self, room_id: str) -> list[tuple[str, str, str]]:
        rows = await self.db.fetch(
            "SELECT state_key, membership, event_id FROM current_state WHERE room_id = $1 "
            "AND type = 'm.room.member'", room_id)
        return [(r["state_key"], r["membership"] or "", r["event_id"]) for r in rows]

    # ---- batched forms for a /sync over many rooms (services/syncapi/prefetch.py) ----
    async def current_state_many(self, room_ids: Sequence[str]
                                 ) -> dict[str, list[tuple[str, str, str, str | None]]]:
        """room_id -> [(type, state_key, event_id, membership)] of each room's current state."""
        out: dict[str, list[tuple[str, str, str, str | None]]] = {r: [] for r in room_ids}
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT room_id, type, state_key, event_id, membership FROM current_state "
                f"WHERE room_id IN ({in_list(1, len(chunk))})", *chunk)
            for r in rows:
                out[r["room_id"]].append((r["type"], r["state_key"], r["event_id"], r["membership"]))
        return out

    async def member_deltas_many(self, room_ids: Sequence[str], user_id: str) -> dict[str, list[StateDelta]]:
        """`member_deltas` of one user in many rooms."""
        out: dict[str, list[StateDelta]] = {r: [] for r in room_ids}
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT room_id, stream_pos, type, state_key, event_id, prev_event_id, membership FROM state_deltas "
                f"WHERE type = 'm.room.member' AND state_key = $1 AND room_id IN ({in_list(2, len(chunk))}) "
                "ORDER BY stream_pos", user_id, *chunk)
            for r in rows:
                out[r["room_id"]].append(_delta(r))
        return out

    async def state_deltas_of_type_many(self, room_ids: Sequence[str], event_type: str
                                        ) -> dict[str, list[StateDelta]]:
        """`state_deltas_after(room, -1, types=[event_type])` for many rooms."""
        out: dict[str, list[StateDelta]] = {r: [] for r in room_ids}
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT room_id, stream_pos, type, state_key, event_id, prev_event_id, membership FROM state_deltas "
                f"WHERE type = $1 AND room_id IN ({in_list(2, len(chunk))}) ORDER BY stream_pos", event_type, *chunk)
            for r in rows:
                out[r["room_id"]].append(_delta(r))
        return out

    async def user_read_pos_many(self, room_ids: Sequence[str], user_id: str) -> dict[str, int]:
        """`user_read_pos` of one user in many rooms (0 where there is no receipt)."""
        out = {r: 0 for r in room_ids}
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT r.room_id, MAX(e.stream_pos) AS pos FROM receipts r JOIN events e ON e.event_id = r.event_id "
                "WHERE r.user_id = $1 AND r.receipt_type IN ('m.read', 'm.read.private') "
                f"AND r.thread_id IN ('', 'main') AND r.room_id IN ({in_list(2, len(chunk))}) GROUP BY r.room_id",
                user_id, *chunk)
            for r in rows:
                if r["pos"] is not None:
                    out[r["room_id"]] = int(r["pos"])
        return out

    async def state_deltas_after(self, room_id: str, after: int, upto: int | None = None,
                                 types: Sequence[str] | None = None) -> list[StateDelta]:
        sql = ("SELECT room_id, stream_pos, type, state_key, event_id, prev_event_id, membership "
               "FROM state_deltas WHERE room_id = $1 AND stream_pos > $2")
        args: list[Any] = [room_id, after]
        if upto is not None:
            sql += f" AND stream_pos <= ${len(args) + 1}"
            args.append(upto)
        if types:
            sql += f" AND type IN ({in_list(len(args) + 1, len(types))})"
            args.extend(types)
        rows = await self.db.fetch(sql + " ORDER BY stream_pos", *args)
        return [_delta(r) for r in rows]

    async def member_deltas(self, room_id: str, user_id: str) -> list[StateDelta]:
        rows = await self.db.fetch(
            "SELECT room_id, stream_pos, type, state_key, event_id, prev_event_id, membership FROM state_deltas "
            "WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2 ORDER BY stream_pos",
            room_id, user_id)
        return [_delta(r) for r in rows]

    async def membership_at(self, room_id: str, user_id: str, pos: int) -> str | None:
        return await self.db.fetchval(
            "SELECT membership FROM state_deltas WHERE room_id = $1 AND type = 'm.room.member' "
            "AND state_key = $2 AND stream_pos <= $3 ORDER BY stream_pos DESC LIMIT 1", room_id, user_id, pos)

    async def rooms_for_user(self, user_id: str) -> list[MembershipRow]:
        rows = await self.db.fetch(
            "SELECT room_id, membership, event_id, stream_pos FROM current_state "
            "WHERE type = 'm.room.member' AND state_key = $1", user_id)
        return [MembershipRow(r["room_id"], r["membership"] or "", r["event_id"], int(r["stream_pos"]))
                for r in rows]

    async def membership_changes(self, user_id: str, after: int, upto: int) -> list[StateDelta]:
        rows = await self.db.fetch(
            "SELECT room_id, stream_pos, type, state_key, event_id, prev_event_id, membership FROM state_deltas "
            "WHERE type = 'm.room.member' AND state_key = $1 AND stream_pos > $2 AND stream_pos <= $3 "
            "ORDER BY stream_pos", user_id, after, upto)
        return [_delta(r) for r in rows]

    async def member_counts(self, room_id: str) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT membership, COUNT(*) AS n FROM current_state WHERE room_id = $1 AND type = 'm.room.member' "
            "GROUP BY membership", room_id)
        return {r["membership"]: int(r["n"]) for r in rows}

    # ---- receipts -----------------------------------------------------------
    async def upsert_receipt(self, conn: Connection, room_id: str, receipt_type: str, user_id: str,
                             thread_id: str, event_id: str, ts: int, pos: int) -> None:
        await conn.execute(
            "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, receipt_type, user_id, thread_id) "
            "DO UPDATE SET event_id = $5, ts = $6, stream_pos = $7",
            room_id, receipt_type, user_id, thread_id, event_id, ts, pos)

    async def receipt_event(self, conn: Connection, room_id: str, receipt_type: str, user_id: str,
                            thread_id: str) -> str | None:
        return await conn.fetchval(
            "SELECT event_id FROM receipts WHERE room_id = $1 AND receipt_type = $2 AND user_id = $3 "
            "AND thread_id = $4", room_id, receipt_type, user_id, thread_id)

    async def receipts(self, room_ids: Sequence[str], after: int, upto: int) -> list[ReceiptRow]:
        out: list[ReceiptRow] = []
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts "
                f"WHERE stream_pos > $1 AND stream_pos <= $2 AND room_id IN ({in_list(3, len(chunk))})",
                after, upto, *chunk)
            out.extend(ReceiptRow(r["room_id"], r["receipt_type"], r["user_id"], r["thread_id"], r["event_id"],
                                  int(r["ts"]), int(r["stream_pos"])) for r in rows)
        return out

    async def stream_positions_of(self, conn: Connection, event_ids: Sequence[str]) -> dict[str, int]:
        rows = await conn.fetch(
            f"SELECT event_id, stream_pos FROM events WHERE stream_pos IS NOT NULL "
            f"AND event_id IN ({in_list(1, len(event_ids))})", *event_ids)
        return {r["event_id"]: int(r["stream_pos"]) for r in rows}

    async def user_read_pos(self, room_id: str, user_id: str) -> int:
        """Stream position of the user's latest (unthreaded or main) read receipt."""
        v = await self.db.fetchval(
            "SELECT MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id "
            "WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private') "
            "AND r.thread_id IN ('', 'main')", room_id, user_id)
        return int(v) if v is not None else 0

    # ---- to-device ----------------------------------------------------------
    async def to_device_exists(self, conn: Connection, user_id: str, device_id: str, sender: str,
                               message_id: str) -> bool:
        return await conn.fetchval(
            "SELECT 1 FROM to_device WHERE user_id = $1 AND device_id = $2 AND sender = $3 AND message_id = $4",
            user_id, device_id, sender, message_id) is not None

    async def insert_to_device(self, conn: Connection, pos: int, user_id: str, device_id: str, sender: str,
                               type_: str, content: dict[str, Any], message_id: str) -> None:
        await conn.execute(
            "INSERT INTO to_device (stream_pos, user_id, device_id, sender, type, content, message_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            pos, user_id, device_id, sender, type_, dumps(content), message_id)

    async def to_device_messages(self, user_id: str, device_id: str, after: int, upto: int, limit: int
                                 ) -> list[ToDeviceRow]:
        rows = await self.db.fetch(
            "SELECT stream_pos, sender, type, content FROM to_device WHERE user_id = $1 AND device_id = $2 "
            "AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos LIMIT $5",
            user_id, device_id, after, upto, limit)
        return [ToDeviceRow(int(r["stream_pos"]), r["sender"], r["type"], json.loads(r["content"])) for r in rows]

    async def delete_to_device_upto(self, user_id: str, device_id: str, upto: int) -> None:
        await self.db.execute(
            "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3",
            user_id, device_id, upto)

    # ---- device lists -------------------------------------------------------
    async def upsert_device_list_change(self, conn: Connection, user_id: str, pos: int) -> None:
        await conn.execute(
            "INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2) "
            "ON CONFLICT (user_id) DO UPDATE SET stream_pos = $2", user_id, pos)

    async def device_list_changes(self, after: int, upto: int) -> list[str]:
        rows = await self.db.fetch(
            "SELECT user_id FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2", after, upto)
        return [r["user_id"] for r in rows]

    async def joined_members_of(self, room_ids: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT DISTINCT state_key FROM current_state WHERE type = 'm.room.member' AND membership = 'join' "
                f"AND room_id IN ({in_list(1, len(chunk))})", *chunk)
            out.update(r["state_key"] for r in rows)
        return out

    async def member_deltas_in(self, room_ids: Sequence[str], after: int, upto: int) -> list[StateDelta]:
        out: list[StateDelta] = []
        for chunk in _chunks(list(room_ids)):
            rows = await self.db.fetch(
                "SELECT room_id, stream_pos, type, state_key, event_id, prev_event_id, membership FROM state_deltas "
                "WHERE type = 'm.room.member' AND stream_pos > $1 AND stream_pos <= $2 "
                f"AND room_id IN ({in_list(3, len(chunk))})", after, upto, *chunk)
            out.extend(_delta(r) for r in rows)
        return out

    # ---- account data -------------------------------------------------------
    async def upsert_account_data(self, conn: Connection, user_id: str, room_id: str, data_type: str,
                                  content: dict[str, Any], pos: int) -> None:
        await conn.execute(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = $4, stream_pos = $5",
            user_id, room_id, data_type, dumps(content), pos)

    async def account_data_content(self, conn: Connection, user_id: str, room_id: str, data_type: str) -> str | None:
        return await conn.fetchval(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
            user_id, room_id, data_type)

    async def ignored_users(self, user_id: str) -> set[str]:
        """The user's m.ignored_user_list (from the projected account data)."""
        content = await self.account_data_content(self.db, user_id, "", "m.ignored_user_list")
        if content is None:
            return set()
        try:
            ignored = json.loads(content).get("ignored_users")
        except (ValueError, AttributeError):
            return set()
        return {u for u in ignored if isinstance(u, str)} if isinstance(ignored, dict) else set()

    async def account_data(self, user_id: str, after: int, upto: int) -> list[tuple[str, str, dict[str, Any]]]:
        rows = await self.db.fetch(
            "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 AND stream_pos > $2 "
            "AND stream_pos <= $3 ORDER BY stream_pos", user_id, after, upto)
        return [(r["room_id"], r["data_type"], json.loads(r["content"])) for r in rows]


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
