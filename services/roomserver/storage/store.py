"""The roomserver's SQL: each query written once for PostgreSQL and SQLite.

The write path is `persist()`: one transaction per input (one event, or the whole
batch of a room creation) writing the events, their state snapshots, the room's
current state, memberships, forward extremities, outbox rows, the client
transaction ID and the input's result together.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from libs.storage import Connection, Database

from services.roomserver.state import (
    EMPTY_SNAPSHOT,
    NewSnapshot,
    NidState,
    RoomInfo,
    SnapshotInfo,
    SnapshotRef,
    apply_chain,
    hash_hex,
)

MIGRATIONS_PACKAGE = "services.roomserver.storage.migrations"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


async def _insert_returning(
    tx: Connection, table: str, cols: tuple[str, ...], returning: str, rows: list[tuple[Any, ...]]
) -> dict[str, int]:
    """Multi-row INSERT ... RETURNING (one round trip per 500 rows); returns
    {first returned column: second} (e.g. event_id -> event_nid)."""
    out: dict[str, int] = {}
    n = len(cols)
    for i in range(0, len(rows), 500):
        part = rows[i : i + 500]
        values = ",".join(
            "(" + ",".join(f"${k * n + j + 1}" for j in range(n)) + ")" for k in range(len(part))
        )
        args = [v for row in part for v in row]
        for r in await tx.fetch(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES {values} RETURNING {returning}", *args
        ):
            out[r[0]] = int(r[1])
    return out


def _known_nid(ref: "SnapshotRef") -> int | None:
    """The nid of a snapshot already in the database; None (or 0, the empty
    state) when the event needs the one-by-one path of `persist`."""
    if isinstance(ref, NewSnapshot):
        return ref.nid or None
    return ref.nid


@dataclass(slots=True)
class NewRoomRow:
    room_id: str
    room_version: str
    creator: str
    created_ts: int
    visibility: str = "private"


@dataclass(slots=True)
class PersistEvent:
    event_id: str
    json: str                      # the PDU as canonical JSON text
    type_nid: int
    state_key_nid: int | None
    depth: int
    before: SnapshotRef
    after: SnapshotRef
    rejection_reason: str | None = None
    soft_failed: bool = False
    # (sender, device_id, txn_id) of the client request that made this event.
    txn: tuple[str, str, str] | None = None
    # The OutputNewEvent as a dict, or None if nothing is published (rejected).
    output: dict[str, Any] | None = None
    state_tuple: tuple[str, str] | None = None  # (type, state_key) of a state event
    event_nid: int = 0             # assigned by persist()


# A reference to an event in a persist batch: its event_id (in the batch) or its nid.
EventRef = str | int


@dataclass(slots=True)
class PersistBatch:
    room_nid: int                               # 0 with new_room set
    events: list[PersistEvent]
    new_room: NewRoomRow | None = None
    current_snapshot: SnapshotRef | None = None  # the room's new current state
    # Current state changes: (type_nid, state_key_nid) -> event, or None to delete.
    state_changes: dict[tuple[int, int], EventRef | None] = field(default_factory=dict)
    # user_id -> (membership, event)
    membership_changes: dict[str, tuple[str, EventRef]] = field(default_factory=dict)
    extremities_removed: list[int] = field(default_factory=list)
    extremities_added: list[EventRef] = field(default_factory=list)
    last_sent_event_id: str | None = None
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (alias, creator)
    # The input's result, stored under its request ID for redelivery.
    request_id: str | None = None
    result: dict[str, Any] | None = None
    # More (request_id, result) pairs: a batch of inputs committed together.
    input_results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass(slots=True)
class PersistResult:
    room_nid: int
    outbox: list[tuple[int, str, str, str]]  # (outbox_nid, room_id, event_id, record json)


@dataclass(slots=True)
class EventRow:
    event_id: str
    event_nid: int
    room_id: str
    room_version: str
    pdu: dict[str, Any]
    rejected: bool
    soft_failed: bool
    before_snapshot_nid: int
    after_snapshot_nid: int


class RoomserverStore:
    """Queries over the roomserver's tables; string interning is cached in memory."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._type_nids: dict[str, int] = {}
        self._type_names: dict[int, str] = {}
        self._sk_nids: dict[str, int] = {}
        self._sk_names: dict[int, str] = {}

    # ---- interning -----------------------------------------------------------
    # Done outside the event transaction (autocommit): an interned string that
    # ends up unused is harmless, and the cache never holds a rolled-back nid.
    async def intern_types(self, names: Iterable[str]) -> dict[str, int]:
        return await self._intern(
            names, self._type_nids, self._type_names, "event_types", "type_nid", "event_type"
        )

    async def intern_state_keys(self, names: Iterable[str]) -> dict[str, int]:
        return await self._intern(
            names, self._sk_nids, self._sk_names, "state_keys", "state_key_nid", "state_key"
        )

    async def _intern(
        self,
        names: Iterable[str],
        cache: dict[str, int],
        rev: dict[int, str],
        table: str,
        nid_col: str,
        name_col: str,
    ) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in names:
            nid = cache.get(name)
            if nid is None:
                nid = await self.db.fetchval(
                    f"INSERT INTO {table} ({name_col}) VALUES ($1) "
                    f"ON CONFLICT ({name_col}) DO NOTHING RETURNING {nid_col}",
                    name,
                )
                if nid is None:
                    nid = await self.db.fetchval(
                        f"SELECT {nid_col} FROM {table} WHERE {name_col} = $1", name
                    )
                nid = int(nid)
                cache[name] = nid
                rev[nid] = name
            out[name] = nid
        return out

    async def _names(
        self, nids: Iterable[int], rev: dict[int, str], cache: dict[str, int], table: str,
        nid_col: str, name_col: str,
    ) -> None:
        missing = sorted({n for n in nids if n not in rev})
        for i in range(0, len(missing), 500):
            part = missing[i : i + 500]
            ph = ",".join(f"${k + 1}" for k in range(len(part)))
            for r in await self.db.fetch(
                f"SELECT {nid_col}, {name_col} FROM {table} WHERE {nid_col} IN ({ph})", *part
            ):
                rev[int(r[0])] = r[1]
                cache[r[1]] = int(r[0])

    async def state_names(
        self, nid_state: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[str, str]]:
        """(type_nid, state_key_nid) -> (type, state_key) for every key of a state."""
        nid_state = list(nid_state)
        await self._names(
            (t for t, _ in nid_state), self._type_names, self._type_nids,
            "event_types", "type_nid", "event_type",
        )
        await self._names(
            (s for _, s in nid_state), self._sk_names, self._sk_nids,
            "state_keys", "state_key_nid", "state_key",
        )
        return {k: (self._type_names[k[0]], self._sk_names[k[1]]) for k in nid_state}

    # ---- rooms -----------------------------------------------------------------
    async def room_row(self, room_id: str) -> Any:
        return await self.db.fetchrow(
            "SELECT room_nid, room_version, creator, visibility, snapshot_nid, last_sent_event_id"
            " FROM rooms WHERE room_id = $1",
            room_id,
        )

    async def load_room(self, room_id: str) -> RoomInfo | None:
        """The room's in-memory view, rebuilt from the database."""
        row = await self.room_row(room_id)
        if row is None:
            return None
        room_nid = int(row["room_nid"])
        snap = await self.snapshot_info(int(row["snapshot_nid"]))
        rows = await self.db.fetch(
            "SELECT c.type_nid, c.state_key_nid, c.event_nid, e.event_id"
            " FROM current_state c JOIN events e ON e.event_nid = c.event_nid"
            " WHERE c.room_nid = $1",
            room_nid,
        )
        nid_state: NidState = {(int(r[0]), int(r[1])): (r[3], int(r[2])) for r in rows}
        names = await self.state_names(nid_state)
        state = {names[k]: entry for k, entry in nid_state.items()}
        ext_rows = await self.db.fetch(
            "SELECT e.event_id, e.event_nid, e.depth FROM forward_extremities f"
            " JOIN events e ON e.event_nid = f.event_nid WHERE f.room_nid = $1",
            room_nid,
        )
        return RoomInfo(
            room_nid=room_nid,
            room_id=room_id,
            room_version=row["room_version"],
            creator=row["creator"],
            snapshot=snap,
            state=state,
            nid_state=nid_state,
            extremities={r[0]: (int(r[1]), int(r[2])) for r in ext_rows},
            last_sent_event_id=row["last_sent_event_id"],
        )

    # ---- snapshots ---------------------------------------------------------------
    async def snapshot_info(self, snapshot_nid: int) -> SnapshotInfo:
        if snapshot_nid == 0:
            return EMPTY_SNAPSHOT
        r = await self.db.fetchrow(
            "SELECT state_hash, state_size, chain_len FROM state_snapshots WHERE snapshot_nid = $1",
            snapshot_nid,
        )
        if r is None:
            raise LookupError(f"no state snapshot {snapshot_nid}")
        return SnapshotInfo(snapshot_nid, int(r[0], 16), int(r[1]), int(r[2]))

    async def load_snapshot(self, snapshot_nid: int) -> dict[tuple[int, int], int]:
        """The full state of a snapshot: its base plus every delta up to it (one query)."""
        if snapshot_nid == 0:
            return {}
        rows = await self.db.fetch(
            "WITH RECURSIVE chain(snapshot_nid, parent_nid, chain_len, delta) AS ("
            " SELECT snapshot_nid, parent_nid, chain_len, delta FROM state_snapshots"
            "  WHERE snapshot_nid = $1"
            " UNION ALL"
            " SELECT s.snapshot_nid, s.parent_nid, s.chain_len, s.delta"
            "  FROM state_snapshots s JOIN chain c ON s.snapshot_nid = c.parent_nid"
            ") SELECT chain_len, delta FROM chain ORDER BY chain_len",
            snapshot_nid,
        )
        return apply_chain([json.loads(r[1]) for r in rows])

    async def snapshot_entries(self, snapshot_nid: int) -> dict[tuple[int, int], tuple[str, int]]:
        """A snapshot's full state as (type_nid, state_key_nid) -> (event_id, event_nid)."""
        nids = await self.load_snapshot(snapshot_nid)
        ids = await self.event_ids_by_nid(list(nids.values()))
        return {k: (ids[n], n) for k, n in nids.items() if n in ids}

    async def event_ids_by_nid(self, nids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        uniq = list(dict.fromkeys(nids))
        for i in range(0, len(uniq), 500):
            part = uniq[i : i + 500]
            ph = ",".join(f"${k + 1}" for k in range(len(part)))
            for r in await self.db.fetch(
                f"SELECT event_nid, event_id FROM events WHERE event_nid IN ({ph})", *part
            ):
                out[int(r[0])] = r[1]
        return out

    async def events_in_range(self, room_id: str, min_depth: int, max_depth: int, limit: int) -> list[EventRow]:
        """Non-rejected events of a room with min_depth <= depth <= max_depth, deepest first."""
        rows = await self.db.fetch(
            self._EVENT_COLS + " WHERE r.room_id = $1 AND e.depth >= $2 AND e.depth <= $3"
            " AND e.rejected = FALSE ORDER BY e.depth DESC, e.event_nid DESC LIMIT $4",
            room_id, min_depth, max_depth, limit,
        )
        return [self._event_row(r) for r in rows]

    async def set_membership(self, room_nid: int, user_id: str, membership: str, event_nid: int) -> None:
        await self.db.execute(
            "INSERT INTO memberships (room_nid, user_id, membership, event_nid)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (room_nid, user_id)"
            " DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid",
            room_nid, user_id, membership, event_nid,
        )

    async def count_snapshots(self, room_nid: int) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM state_snapshots WHERE room_nid = $1", room_nid
        ))

    async def _write_snapshot(
        self, tx: Connection, room_nid: int, snap: NewSnapshot, nids: dict[str, int]
    ) -> int:
        if snap.nid:
            return snap.nid
        parent_nid: int | None = None
        if snap.parent is not None:
            parent_nid = (
                await self._write_snapshot(tx, room_nid, snap.parent, nids)
                if isinstance(snap.parent, NewSnapshot)
                else snap.parent.nid
            )
        hh = hash_hex(snap.hash)
        delta = [(t, s, nids[e] if isinstance(e, str) else e) for t, s, e in snap.delta]
        nid = await tx.fetchval(
            "INSERT INTO state_snapshots (room_nid, parent_nid, chain_len, state_size, state_hash, delta)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_nid, state_hash) DO NOTHING"
            " RETURNING snapshot_nid",
            room_nid, parent_nid, snap.chain_len, snap.size, hh, _dumps(delta),
        )
        if nid is None:
            # The same state exists already (another path led to it): reuse it.
            row = await tx.fetchrow(
                "SELECT snapshot_nid, chain_len FROM state_snapshots"
                " WHERE room_nid = $1 AND state_hash = $2",
                room_nid, hh,
            )
            assert row is not None
            nid = row[0]
            snap.chain_len = int(row[1])
        snap.nid = int(nid)
        return snap.nid

    async def find_snapshot(self, room_nid: int, h: int) -> int | None:
        v = await self.db.fetchval(
            "SELECT snapshot_nid FROM state_snapshots WHERE room_nid = $1 AND state_hash = $2",
            room_nid, hash_hex(h),
        )
        return None if v is None else int(v)

    # ---- the write path -------------------------------------------------------------
    async def persist(self, batch: PersistBatch) -> PersistResult:
        async with self.db.transaction() as tx:
            room_nid = batch.room_nid
            room_id = batch.new_room.room_id if batch.new_room else ""
            if batch.new_room is not None:
                nr = batch.new_room
                room_nid = int(await tx.fetchval(
                    "INSERT INTO rooms (room_id, room_version, creator, created_ts, visibility)"
                    " VALUES ($1, $2, $3, $4, $5) RETURNING room_nid",
                    nr.room_id, nr.room_version, nr.creator, nr.created_ts, nr.visibility,
                ))
                for alias, creator in batch.aliases:
                    await tx.execute(
                        "INSERT INTO room_aliases (alias, room_id, creator, created_ts)"
                        " VALUES ($1, $2, $3, $4)",
                        alias, nr.room_id, creator, nr.created_ts,
                    )
            nids: dict[str, int] = {}
            outbox_rows: list[tuple[str, str, str]] = []  # (room_id, event_id, record)
            # Events whose snapshots exist already (messages, mostly) are inserted
            # together and their nids read back in one query (few round trips).
            plain: list[PersistEvent] = []

            async def flush_plain() -> None:
                if not plain:
                    return
                got = await _insert_returning(
                    tx, "events", ("event_id", "room_nid", "type_nid", "state_key_nid", "depth",
                                   "before_snapshot_nid", "after_snapshot_nid", "rejected",
                                   "rejection_reason", "soft_failed", "json"), "event_id, event_nid",
                    [(e.event_id, room_nid, e.type_nid, e.state_key_nid, e.depth, _known_nid(e.before),
                      _known_nid(e.after), e.rejection_reason is not None, e.rejection_reason,
                      e.soft_failed, e.json) for e in plain],
                )
                for e in plain:
                    e.event_nid = got[e.event_id]
                    nids[e.event_id] = e.event_nid
                plain.clear()

            for ev in batch.events:
                if _known_nid(ev.before) and _known_nid(ev.after):
                    plain.append(ev)
                    self._stage_side_rows(ev, room_id, outbox_rows)
                    continue
                await flush_plain()
                before = await self._snap_nid(tx, room_nid, ev.before, nids)
                # A state change's snapshot names the event itself: written after it.
                after_later = isinstance(ev.after, NewSnapshot) and ev.after.nid == 0
                after = before if after_later else await self._snap_nid(tx, room_nid, ev.after, nids)
                ev.event_nid = int(await tx.fetchval(
                    "INSERT INTO events (event_id, room_nid, type_nid, state_key_nid, depth,"
                    " before_snapshot_nid, after_snapshot_nid, rejected, rejection_reason,"
                    " soft_failed, json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                    " RETURNING event_nid",
                    ev.event_id, room_nid, ev.type_nid, ev.state_key_nid, ev.depth, before, after,
                    ev.rejection_reason is not None, ev.rejection_reason, ev.soft_failed, ev.json,
                ))
                nids[ev.event_id] = ev.event_nid
                if after_later:
                    after = await self._snap_nid(tx, room_nid, ev.after, nids)
                    await tx.execute(
                        "UPDATE events SET after_snapshot_nid = $2 WHERE event_nid = $1",
                        ev.event_nid, after,
                    )
                self._stage_side_rows(ev, room_id, outbox_rows)
            await flush_plain()
            txn_rows = [(*ev.txn, ev.event_id) for ev in batch.events if ev.txn is not None]
            await tx.executemany(
                "INSERT INTO transactions (sender, device_id, txn_id, event_id)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                txn_rows,
            )

            def ref(r: EventRef) -> int:
                return nids[r] if isinstance(r, str) else r

            for (t, s), target in batch.state_changes.items():
                if target is None:
                    await tx.execute(
                        "DELETE FROM current_state WHERE room_nid = $1 AND type_nid = $2"
                        " AND state_key_nid = $3",
                        room_nid, t, s,
                    )
                else:
                    await tx.execute(
                        "INSERT INTO current_state (room_nid, type_nid, state_key_nid, event_nid)"
                        " VALUES ($1, $2, $3, $4) ON CONFLICT (room_nid, type_nid, state_key_nid)"
                        " DO UPDATE SET event_nid = excluded.event_nid",
                        room_nid, t, s, ref(target),
                    )
            for user_id, (membership, target) in batch.membership_changes.items():
                await tx.execute(
                    "INSERT INTO memberships (room_nid, user_id, membership, event_nid)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (room_nid, user_id)"
                    " DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid",
                    room_nid, user_id, membership, ref(target),
                )
            for nid in batch.extremities_removed:
                await tx.execute(
                    "DELETE FROM forward_extremities WHERE room_nid = $1 AND event_nid = $2",
                    room_nid, nid,
                )
            for target in batch.extremities_added:
                await tx.execute(
                    "INSERT INTO forward_extremities (room_nid, event_nid) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING",
                    room_nid, ref(target),
                )
            if batch.current_snapshot is not None:
                snap_nid = await self._snap_nid(tx, room_nid, batch.current_snapshot, nids)
                await tx.execute(
                    "UPDATE rooms SET snapshot_nid = $2, last_sent_event_id = $3 WHERE room_nid = $1",
                    room_nid, snap_nid, batch.last_sent_event_id,
                )
            elif batch.last_sent_event_id is not None:
                await tx.execute(
                    "UPDATE rooms SET last_sent_event_id = $2 WHERE room_nid = $1",
                    room_nid, batch.last_sent_event_id,
                )
            outbox: list[tuple[int, str, str, str]] = []
            if outbox_rows:
                onids = await _insert_returning(
                    tx, "outbox", ("room_id", "event_id", "record"), "event_id, outbox_nid", outbox_rows
                )
                outbox = sorted((onids[eid], rid, eid, rec) for rid, eid, rec in outbox_rows)
            results = list(batch.input_results)
            if batch.request_id is not None and batch.result is not None:
                results.append((batch.request_id, batch.result))
            if results:
                await tx.executemany(
                    "INSERT INTO input_results (request_id, result) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING",
                    [(rid, _dumps(res)) for rid, res in results],
                )
        return PersistResult(room_nid=room_nid, outbox=outbox)

    @staticmethod
    def _stage_side_rows(ev: PersistEvent, room_id: str, outbox_rows: list[tuple[str, str, str]]) -> None:
        if ev.output is not None:
            outbox_rows.append((ev.output["event"].get("room_id") or room_id, ev.event_id, _dumps(ev.output)))

    async def _snap_nid(
        self, tx: Connection, room_nid: int, ref: SnapshotRef, nids: dict[str, int]
    ) -> int:
        if isinstance(ref, NewSnapshot):
            return await self._write_snapshot(tx, room_nid, ref, nids)
        return ref.nid

    # ---- idempotency ----------------------------------------------------------------
    async def get_txn_event(self, sender: str, device_id: str, txn_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT event_id FROM transactions WHERE sender = $1 AND device_id = $2 AND txn_id = $3",
            sender, device_id, txn_id,
        )

    async def get_input_result(self, request_id: str) -> dict[str, Any] | None:
        v = await self.db.fetchval("SELECT result FROM input_results WHERE request_id = $1", request_id)
        return None if v is None else json.loads(v)

    async def get_input_results(self, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(request_ids))
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            ph = ",".join(f"${k + 1}" for k in range(len(part)))
            for r in await self.db.fetch(
                f"SELECT request_id, result FROM input_results WHERE request_id IN ({ph})", *part
            ):
                out[r[0]] = json.loads(r[1])
        return out

    async def get_prior_outcomes(
        self, request_ids: list[str], txns: list[tuple[str, str, str]]
    ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str, str], str]]:
        """`get_input_results` and `get_txn_events` in one round trip (small batches)."""
        ids = list(dict.fromkeys(request_ids))
        keys = list(dict.fromkeys(txns))
        if len(ids) > 200 or len(keys) > 100 or not (ids or keys):
            return (await self.get_input_results(ids) if ids else {},
                    await self.get_txn_events(keys) if keys else {})
        parts: list[str] = []
        args: list[Any] = []
        if ids:
            ph = ",".join(f"${k + 1}" for k in range(len(ids)))
            parts.append(f"SELECT request_id, result, NULL, NULL FROM input_results WHERE request_id IN ({ph})")
            args.extend(ids)
        if keys:
            base = len(args)
            cond = " OR ".join(
                f"(sender = ${base + 3 * k + 1} AND device_id = ${base + 3 * k + 2} AND txn_id = ${base + 3 * k + 3})"
                for k in range(len(keys))
            )
            parts.append(f"SELECT sender, device_id, txn_id, event_id FROM transactions WHERE {cond}")
            args.extend(v for key in keys for v in key)
        results: dict[str, dict[str, Any]] = {}
        known: dict[tuple[str, str, str], str] = {}
        for r in await self.db.fetch(" UNION ALL ".join(parts), *args):
            if r[3] is None:
                results[r[0]] = json.loads(r[1])
            else:
                known[(r[0], r[1], r[2])] = r[3]
        return results, known

    async def get_txn_events(
        self, txns: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], str]:
        """(sender, device_id, txn_id) -> event_id for the client transactions seen before."""
        out: dict[tuple[str, str, str], str] = {}
        keys = list(dict.fromkeys(txns))
        for i in range(0, len(keys), 200):
            part = keys[i : i + 200]
            cond = " OR ".join(
                f"(sender = ${3 * k + 1} AND device_id = ${3 * k + 2} AND txn_id = ${3 * k + 3})"
                for k in range(len(part))
            )
            args = [v for key in part for v in key]
            for r in await self.db.fetch(
                f"SELECT sender, device_id, txn_id, event_id FROM transactions WHERE {cond}", *args
            ):
                out[(r[0], r[1], r[2])] = r[3]
        return out

    async def put_input_results(self, results: list[tuple[str, dict[str, Any]]]) -> None:
        await self.db.executemany(
            "INSERT INTO input_results (request_id, result) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(rid, _dumps(res)) for rid, res in results],
        )

    async def put_input_result(self, request_id: str, result: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO input_results (request_id, result) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            request_id, _dumps(result),
        )

    # ---- outbox ---------------------------------------------------------------------
    async def unsent_outbox(self, limit: int = 1000) -> list[tuple[int, str, str, str]]:
        rows = await self.db.fetch(
            "SELECT outbox_nid, room_id, event_id, record FROM outbox WHERE sent = FALSE"
            " ORDER BY outbox_nid LIMIT $1",
            limit,
        )
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    async def mark_sent(self, outbox_nids: list[int]) -> None:
        for i in range(0, len(outbox_nids), 500):
            part = outbox_nids[i : i + 500]
            ph = ",".join(f"${k + 1}" for k in range(len(part)))
            await self.db.execute(f"UPDATE outbox SET sent = TRUE WHERE outbox_nid IN ({ph})", *part)

    async def prune_outbox(self, keep_below: int) -> None:
        await self.db.execute("DELETE FROM outbox WHERE sent = TRUE AND outbox_nid < $1", keep_below)

    # ---- events ---------------------------------------------------------------------
    _EVENT_COLS = (
        "SELECT e.event_id, e.event_nid, r.room_id, r.room_version, e.json, e.rejected,"
        " e.soft_failed, e.before_snapshot_nid, e.after_snapshot_nid"
        " FROM events e JOIN rooms r ON r.room_nid = e.room_nid"
    )

    @staticmethod
    def _event_row(r: Any) -> EventRow:
        return EventRow(
            event_id=r[0], event_nid=int(r[1]), room_id=r[2], room_version=r[3],
            pdu=json.loads(r[4]), rejected=bool(r[5]), soft_failed=bool(r[6]),
            before_snapshot_nid=int(r[7]), after_snapshot_nid=int(r[8]),
        )

    async def get_event_row(self, event_id: str) -> EventRow | None:
        r = await self.db.fetchrow(self._EVENT_COLS + " WHERE e.event_id = $1", event_id)
        return None if r is None else self._event_row(r)

    async def get_event_rows(self, event_ids: list[str]) -> list[EventRow]:
        out: list[EventRow] = []
        for i in range(0, len(event_ids), 500):
            part = event_ids[i : i + 500]
            ph = ",".join(f"${k + 1}" for k in range(len(part)))
            rows = await self.db.fetch(self._EVENT_COLS + f" WHERE e.event_id IN ({ph})", *part)
            out.extend(self._event_row(r) for r in rows)
        return out

    async def get_event_rows_by_nid(self, nids: list[int]) -> list[EventRow]:
        out: list[EventRow] = []
        for i in range(0, len(nids), 500):
            part = nids[i : i + 500]
            ph = ",".join(f"${k + 1}" for k in range(len(part)))
            rows = await self.db.fetch(self._EVENT_COLS + f" WHERE e.event_nid IN ({ph})", *part)
            out.extend(self._event_row(r) for r in rows)
        return out

    # ---- queries ----------------------------------------------------------------------
    async def current_state_rows(self, room_id: str) -> list[EventRow]:
        rows = await self.db.fetch(
            self._EVENT_COLS.replace(" FROM events e", " FROM current_state c"
                                     " JOIN events e ON e.event_nid = c.event_nid")
            + " WHERE c.room_nid = (SELECT room_nid FROM rooms WHERE room_id = $1)",
            room_id,
        )
        return [self._event_row(r) for r in rows]

    async def current_state_event(self, room_id: str, event_type: str, state_key: str) -> EventRow | None:
        r = await self.db.fetchrow(
            self._EVENT_COLS.replace(" FROM events e", " FROM current_state c"
                                     " JOIN events e ON e.event_nid = c.event_nid")
            + " WHERE r.room_id = $1 AND c.room_nid = r.room_nid"
            " AND c.type_nid = (SELECT type_nid FROM event_types WHERE event_type = $2)"
            " AND c.state_key_nid = (SELECT state_key_nid FROM state_keys WHERE state_key = $3)",
            room_id, event_type, state_key,
        )
        return None if r is None else self._event_row(r)

    async def membership(self, room_id: str, user_id: str) -> tuple[str, str] | None:
        r = await self.db.fetchrow(
            "SELECT m.membership, e.event_id FROM memberships m"
            " JOIN rooms r ON r.room_nid = m.room_nid"
            " JOIN events e ON e.event_nid = m.event_nid"
            " WHERE r.room_id = $1 AND m.user_id = $2",
            room_id, user_id,
        )
        return None if r is None else (r[0], r[1])

    async def joined_members(self, room_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT m.user_id FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid"
            " WHERE r.room_id = $1 AND m.membership = 'join' ORDER BY m.user_id",
            room_id,
        )
        return [r[0] for r in rows]

    async def rooms_for_user(self, user_id: str, memberships: tuple[str, ...]) -> list[tuple[str, str, str]]:
        if not memberships:
            return []
        ph = ",".join(f"${k + 2}" for k in range(len(memberships)))
        rows = await self.db.fetch(
            "SELECT r.room_id, m.membership, e.event_id FROM memberships m"
            " JOIN rooms r ON r.room_nid = m.room_nid"
            " JOIN events e ON e.event_nid = m.event_nid"
            f" WHERE m.user_id = $1 AND m.membership IN ({ph}) ORDER BY r.room_nid",
            user_id, *memberships,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def resolve_alias(self, alias: str) -> str | None:
        return await self.db.fetchval("SELECT room_id FROM room_aliases WHERE alias = $1", alias)

    async def insert_alias(self, alias: str, room_id: str, creator: str, ts: int) -> bool:
        v = await self.db.fetchval(
            "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (alias) DO NOTHING RETURNING alias",
            alias, room_id, creator, ts,
        )
        return v is not None

    async def delete_alias(self, alias: str) -> bool:
        v = await self.db.fetchval("DELETE FROM room_aliases WHERE alias = $1 RETURNING alias", alias)
        return v is not None

    async def aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias", room_id
        )
        return [r[0] for r in rows]

    async def alias_creator(self, alias: str) -> str | None:
        return await self.db.fetchval("SELECT creator FROM room_aliases WHERE alias = $1", alias)

    async def set_visibility(self, room_id: str, visibility: str) -> bool:
        v = await self.db.fetchval(
            "UPDATE rooms SET visibility = $2 WHERE room_id = $1 RETURNING room_nid", room_id, visibility
        )
        return v is not None

    async def public_rooms(self) -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_id FROM rooms WHERE visibility = 'public' ORDER BY room_nid"
        )
        return [r[0] for r in rows]
