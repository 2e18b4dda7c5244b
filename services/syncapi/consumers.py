"""Projection of the log topics into the syncapi's tables.

`SyncProjector` applies one decoded record at a time; it is idempotent (redelivered
records change nothing: dedup on event_id, receipt/account-data values, to-device
message IDs). `SyncConsumers` drives it from the log with `libs.log.runner.KeyedRunner`.
Each write commits first, then advances the in-memory positions and wakes long-polls.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Any

from libs.log.api import EventLog, Record, TopicSpec
from libs.log.runner import KeyedRunner
from libs.storage import Connection
from services.roomserver.api import OutputNewEvent, RoomserverAPI
from services.syncapi.api import (
    TOPIC_CLIENT_DATA,
    TOPIC_KEY_CHANGES,
    TOPIC_RECEIPTS,
    TOPIC_ROOMSERVER_OUTPUT,
    TOPIC_TO_DEVICE,
    TOPIC_TYPING,
    ClientDataRecord,
    KeyChangeRecord,
    ReceiptRecord,
    ToDeviceRecord,
    TypingRecord,
)
from services.syncapi.activity import SyncActivity
from services.syncapi.broadcast import channel_for, publish
from services.syncapi.groupcommit import GroupCommitter
from services.syncapi.storage.store import SyncStore
from services.syncapi.streams import Notifier, Positions, TypingState
from services.userapi.api import UserAPI

log = logging.getLogger(__name__)

TYPING_RETENTION_MS = 5 * 60 * 1000


def _from_dict(cls: Any, obj: Any) -> Any:
    """Build a record dataclass from decoded JSON, ignoring unknown keys."""
    if not isinstance(obj, dict):
        raise ValueError(f"{cls.__name__}: expected an object")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in obj.items() if k in names})


def _check_types(rec: Any, **expected: Any) -> Any:
    """Reject a record whose fields have the wrong JSON types (ValueError)."""
    for name, typ in expected.items():
        v = getattr(rec, name)
        if not isinstance(v, typ) or (isinstance(v, bool) and typ in (int, (int,))):
            raise ValueError(f"{type(rec).__name__}.{name}: wrong type")
    return rec


def parse_typing(obj: Any) -> TypingRecord:
    return _check_types(_from_dict(TypingRecord, obj), room_id=str, user_id=str, typing=bool, timeout_ms=int)


def parse_receipt(obj: Any) -> ReceiptRecord:
    rec = _check_types(_from_dict(ReceiptRecord, obj), room_id=str, user_id=str, receipt_type=str, event_id=str,
                       ts=int)
    if rec.thread_id is not None and not isinstance(rec.thread_id, str):
        raise ValueError("ReceiptRecord.thread_id: wrong type")
    return rec


def parse_to_device(obj: Any) -> ToDeviceRecord:
    return _check_types(_from_dict(ToDeviceRecord, obj), sender=str, type=str, user_id=str, device_id=str,
                        content=dict, message_id=str)


def parse_client_data(obj: Any) -> ClientDataRecord:
    return _check_types(_from_dict(ClientDataRecord, obj), user_id=str, room_id=str, data_type=str, type=str)


def parse_output(obj: Any) -> OutputNewEvent | None:
    """An OutputNewEvent from a roomserver.output record (None for other kinds)."""
    if isinstance(obj, dict) and "event" not in obj:
        # A tagged envelope {"type": "new_event", "new_event": {...}} is accepted too.
        inner = obj.get("new_event")
        if not isinstance(inner, dict):
            return None
        obj = inner
    rec = _from_dict(OutputNewEvent, obj)
    if not isinstance(rec.event, dict) or not isinstance(rec.event.get("event_id"), str):
        raise ValueError("output event without event_id")
    if not isinstance(rec.room_version, str) or not isinstance(rec.event.get("room_id"), str):
        raise ValueError("output event without room_id/room_version")
    for opt in ("device_id", "txn_id", "last_sent_event_id"):
        if not isinstance(getattr(rec, opt), (str, type(None))):
            setattr(rec, opt, None)
    if not isinstance(rec.state_added, list) or not isinstance(rec.state_removed, list):
        raise ValueError("state_added/state_removed must be lists")
    rec.soft_failed, rec.rejected = rec.soft_failed is True, rec.rejected is True
    rec.state_added = [s for s in (rec.state_added or []) if isinstance(s, str)]
    rec.state_removed = [s for s in (rec.state_removed or []) if isinstance(s, str)]
    return rec


def _redacts(pdu: dict[str, Any]) -> str | None:
    c = pdu.get("content")
    r = c.get("redacts") if isinstance(c, dict) else None
    if not isinstance(r, str):
        r = pdu.get("redacts")
    return r if isinstance(r, str) else None


class SyncProjector:
    def __init__(self, store: SyncStore, positions: Positions, notifier: Notifier, typing: TypingState,
                 roomserver: RoomserverAPI | None, userapi: UserAPI | None,
                 activity: SyncActivity | None = None) -> None:
        self.store = store
        self.positions = positions
        self.notifier = notifier
        self.typing = typing
        self.roomserver = roomserver
        self.userapi = userapi
        self.activity = activity or SyncActivity()
        self.channel = channel_for(store.db)
        self.events_projected = 0  # timeline/state events this instance wrote (for /metrics)

    # ---- roomserver.output ----------------------------------------------------
    async def on_output(self, rec: OutputNewEvent) -> bool:
        """Project one committed event. Returns False if it changed nothing."""
        return (await self.on_outputs([rec]))[0]

    async def on_outputs(self, recs: list[OutputNewEvent]) -> list[bool]:
        """Project committed events in order (normally all queued for one room) in
        ONE transaction; then advance the position and wake long-polls once.
        Per event: False if it changed nothing."""
        results = [False] * len(recs)
        prepared: list[tuple[int, OutputNewEvent, dict[str, Any], dict[str, dict[str, Any]]]] = []
        for i, rec in enumerate(recs):
            prep = await self._prepare(rec)
            if prep is not None:
                prepared.append((i, rec, *prep))
        if not prepared:
            return results
        done: list[tuple[int, list[str]]] = []
        async with self.store.db.transaction() as tx:
            # The first event's position comes in the same round trip as its status
            # (not taken if it is a redelivery: redeliveries change nothing).
            first = prepared[0]
            top, first_status = await self.store.reserve_position(
                tx, "events", first[2]["event_id"], not first[1].soft_failed)
            pool = [top] if not (not first[1].soft_failed and first_status[1]) else []

            async def alloc() -> int:
                return pool.pop(0) if pool else await self.store.next_pos(tx, "events")

            for n, (i, rec, pdu, fetched) in enumerate(prepared):
                status = first_status if n == 0 else await self.store.event_status(tx, pdu["event_id"])
                applied = await self._apply(tx, rec, pdu, fetched, status, alloc)
                if applied is not None:
                    done.append(applied)
                    results[i] = True
        if done:
            self.events_projected += len(done)
            for pos, keys in done:  # (before the advance: a /sync seeing the position sees these)
                self.activity.note("events", pos, keys)
            self.positions.advance("events", max(pos for pos, _ in done))
            self.notifier.notify([k for _, keys in done for k in keys])
        return results

    async def _prepare(self, rec: OutputNewEvent) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
        """Checks and I/O before the transaction: (pdu, state events fetched from
        the roomserver), or None if the record changes nothing."""
        pdu = dict(rec.event)
        event_id: str = pdu["event_id"]
        room_id = pdu.get("room_id")
        if not isinstance(room_id, str) or rec.rejected:
            self.notifier.notify([f"e:{event_id}"])  # a wait_for_event need not wait for its timeout
            return None
        in_timeline = not rec.soft_failed
        if not rec.state_added and not rec.state_removed and not in_timeline:
            self.notifier.notify([f"e:{event_id}"])
            return None
        # Fetch state events we never saw (before the transaction: no I/O inside it).
        need = [e for e in rec.state_added if e != event_id]
        if not need:
            return pdu, {}  # (a redelivery is recognised inside the transaction)
        if in_timeline and await self.store.event_pos(event_id) is not None:
            return None  # redelivery: do not fetch anything for it
        known = await self.store.known_event_ids(need)  # once: not per event (a join's state is 10k+)
        missing = [e for e in need if e not in known]
        fetched: dict[str, dict[str, Any]] = {}
        if missing:
            if self.roomserver is None:
                raise RuntimeError("state events missing and no roomserver to ask")
            fetched = await self.roomserver.get_events(missing)
            lost = [e for e in missing if e not in fetched]
            if lost:
                log.warning("roomserver does not have state events %s; skipping them", lost)
        return pdu, fetched

    async def _apply(self, tx: Connection, rec: OutputNewEvent, pdu: dict[str, Any],
                     fetched: dict[str, dict[str, Any]], status: tuple[bool, bool, str | None],
                     alloc: Callable[[], Awaitable[int]]) -> tuple[int, list[str]] | None:
        """Write one event inside the batch's transaction: (its position, keys to
        wake), or None for a redelivery."""
        event_id: str = pdu["event_id"]
        room_id: str = pdu["room_id"]
        in_timeline = not rec.soft_failed
        known, has_pos, pending = status
        if in_timeline and has_pos:
            return None  # redelivery
        pos = await alloc()
        await self.store.upsert_room(tx, room_id, rec.room_version, event_id if in_timeline else None)
        for eid, ev in fetched.items():
            await self.store.insert_event(tx, event_id=eid, room_id=room_id, stream_pos=None, pdu=ev)
        # Keys of the state added (from the events we hold) and removed (from current state).
        keys_added: dict[tuple[str, str], str] = {}
        added_pdus = dict(fetched)
        added_pdus[event_id] = pdu
        other = [e for e in rec.state_added if e not in added_pdus]
        if other:
            rows = await self.store.events_by_ids_conn(tx, other)
            added_pdus.update({r_id: r for r_id, r in rows.items()})
        for eid in rec.state_added:
            ev = added_pdus.get(eid)
            if ev is None or not isinstance(ev.get("state_key"), str):
                continue
            keys_added[(str(ev.get("type", "")), ev["state_key"])] = eid
        removed_keys = await self.store.current_state_keys_of(tx, room_id, rec.state_removed)
        changed_keys = set(keys_added) | {k for k in removed_keys.values() if k not in keys_added}
        own_key = (str(pdu.get("type", "")), pdu["state_key"]) if isinstance(pdu.get("state_key"), str) else None
        lookup = list(changed_keys | ({own_key} if own_key else set()))
        before = await self.store.current_state_for_keys(tx, room_id, lookup)
        if own_key is not None and in_timeline:
            prev_id = before.get(own_key)
            if prev_id is not None and prev_id != event_id:
                prev = await self.store.events_by_ids_conn(tx, [prev_id])
                unsigned = dict(pdu.get("unsigned") or {})
                unsigned["replaces_state"] = prev_id
                if prev_id in prev:
                    unsigned["prev_content"] = prev[prev_id].get("content", {})
                    unsigned["prev_sender"] = prev[prev_id].get("sender")
                pdu["unsigned"] = unsigned
        # State changes other than the event's own (state fetched for a join, or
        # resolved from a fork) get a position of their own just *before* the event:
        # they are the state the event's timeline starts from.
        pending_changes = [k for k in sorted(changed_keys)
                           if not (keys_added.get(k) is not None and before.get(k) == keys_added.get(k))]
        if any(k != own_key or keys_added.get(k) != event_id for k in pending_changes):
            pre_pos, pos = pos, await alloc()
        else:
            pre_pos = pos
        if known:
            if in_timeline:
                await self.store.promote_event(tx, event_id, pos, pdu, rec.device_id, rec.txn_id)
        else:
            await self.store.insert_event(tx, event_id=event_id, room_id=room_id,
                                          stream_pos=pos if in_timeline else None, pdu=pdu,
                                          device_id=rec.device_id, txn_id=rec.txn_id)
        for key in pending_changes:
            new_id = keys_added.get(key)
            membership = None
            if key[0] == "m.room.member" and new_id is not None:
                m = (added_pdus.get(new_id) or {}).get("content", {}).get("membership")
                membership = m if isinstance(m, str) else None
            at = pos if (key == own_key and new_id == event_id) else pre_pos
            await self.store.set_state(tx, room_id, at, key, new_id, before.get(key), membership)
        # Redactions, in whichever order the redaction and its target arrive.
        if pdu.get("type") == "m.room.redaction" and in_timeline:
            target = _redacts(pdu)
            if target:
                await self.store.add_redaction(tx, event_id, target)
                await self.store.mark_redacted(tx, target, event_id)
        if pdu.get("type") == "m.room.redaction" and _redacts(pdu) == event_id:
            pending = await self.store.pending_redaction_for(tx, event_id)  # (self-redaction)
        if pending:
            await self.store.mark_redacted(tx, event_id, pending)
        keys = [f"r:{room_id}", f"e:{event_id}"]
        if pdu.get("type") == "m.room.member" and isinstance(pdu.get("state_key"), str):
            keys.append(f"u:{pdu['state_key']}")
        # Every membership this changed (state from a join or a resolved fork too):
        # those users' room lists changed.
        keys += sorted({f"u:{k[1]}" for k in pending_changes if k[0] == "m.room.member"} - set(keys))
        await publish(tx, self.channel, "events", pos, keys)
        return pos, keys

    # ---- ephemeral.typing -------------------------------------------------------
    def on_typing(self, rec: TypingRecord) -> bool:
        changed = self.typing.set(rec.room_id, rec.user_id, bool(rec.typing), int(rec.timeout_ms))
        if changed:
            self.notifier.notify([f"r:{rec.room_id}"])
        return changed

    def expire_typing(self) -> None:
        rooms = self.typing.expire()
        if rooms:
            self.notifier.notify([f"r:{r}" for r in rooms])

    # ---- ephemeral.receipts ----------------------------------------------------
    async def on_receipt(self, rec: ReceiptRecord) -> bool:
        if rec.receipt_type not in ("m.read", "m.read.private"):
            return False
        thread = rec.thread_id or ""
        async with self.store.db.transaction() as tx:
            cur = await self.store.receipt_event(tx, rec.room_id, rec.receipt_type, rec.user_id, thread)
            if cur == rec.event_id:
                return False
            if cur is not None:
                # Receipts only move forward: a redelivered older record must not win.
                order = await self.store.stream_positions_of(tx, [cur, rec.event_id])
                if cur in order and rec.event_id in order and order[rec.event_id] < order[cur]:
                    return False
            pos = await self.store.next_pos(tx, "receipts")
            await self.store.upsert_receipt(tx, rec.room_id, rec.receipt_type, rec.user_id, thread,
                                            rec.event_id, int(rec.ts), pos)
            await publish(tx, self.channel, "receipts", pos, [f"r:{rec.room_id}"])
        self.positions.advance("receipts", pos)
        self.notifier.notify([f"r:{rec.room_id}"])
        return True

    # ---- user.to_device ----------------------------------------------------------
    async def on_to_device(self, rec: ToDeviceRecord) -> int:
        if not isinstance(rec.message_id, str) or not rec.message_id:
            return 0  # no dedup key: cannot be applied exactly once
        if rec.device_id == "*":
            if self.userapi is None:
                return 0
            devices = [d.device_id for d in await self.userapi.list_devices(rec.user_id)]
        else:
            devices = [rec.device_id]
        stored, pos = 0, 0
        for dev in devices:
            async with self.store.db.transaction() as tx:
                if await self.store.to_device_exists(tx, rec.user_id, dev, rec.sender, rec.message_id):
                    continue
                p = await self.store.next_pos(tx, "to_device")
                await self.store.insert_to_device(tx, p, rec.user_id, dev, rec.sender, rec.type,
                                                  rec.content if isinstance(rec.content, dict) else {},
                                                  rec.message_id)
                await publish(tx, self.channel, "to_device", p, [f"u:{rec.user_id}"])
                stored, pos = stored + 1, p
        if stored:
            self.positions.advance("to_device", pos)
            self.notifier.notify([f"u:{rec.user_id}"])
        return stored

    # ---- user.client_data ----------------------------------------------------
    async def on_client_data(self, rec: ClientDataRecord) -> bool:
        if rec.type != "account_data" or self.userapi is None:
            return False
        content = await self.userapi.get_account_data(rec.user_id, rec.room_id, rec.data_type)
        content = content if isinstance(content, dict) else {}
        async with self.store.db.transaction() as tx:
            cur = await self.store.account_data_content(tx, rec.user_id, rec.room_id, rec.data_type)
            if cur is not None and json.loads(cur) == content:
                return False
            pos = await self.store.next_pos(tx, "account_data")
            await self.store.upsert_account_data(tx, rec.user_id, rec.room_id, rec.data_type, content, pos)
            await publish(tx, self.channel, "account_data", pos, [f"u:{rec.user_id}"])
        self.activity.note("account_data", pos, [f"u:{rec.user_id}"])
        self.positions.advance("account_data", pos)
        self.notifier.notify([f"u:{rec.user_id}"])
        return True


    # ---- user.key_changes -----------------------------------------------------
    async def on_key_change(self, rec: KeyChangeRecord) -> None:
        # Every change gets a new position (a later change must be reported again).
        # Wake everyone sharing a room with the user (and the user's other devices).
        keys = [f"u:{rec.user_id}"] + [f"r:{m.room_id}" for m in await self.store.rooms_for_user(rec.user_id)
                                        if m.membership == "join"]
        async with self.store.db.transaction() as tx:
            pos = await self.store.next_pos(tx, "device_lists")
            await self.store.upsert_device_list_change(tx, rec.user_id, pos)
            await publish(tx, self.channel, "device_lists", pos, keys)
        self.positions.advance("device_lists", pos)
        self.notifier.notify(keys)


class SyncConsumers:
    """Runs the syncapi's consumers on the log."""

    def __init__(self, log_: EventLog, projector: SyncProjector, *, group_prefix: str = "syncapi",
                 instance_id: str | None = None, clock_ms: Callable[[], int] | None = None) -> None:
        self.log = log_
        self.projector = projector
        self.group_prefix = group_prefix
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._runners: list[KeyedRunner] = []
        # Rooms' batches arriving together share one transaction (see groupcommit.py).
        self.outputs: GroupCommitter[OutputNewEvent, bool] = GroupCommitter(projector.on_outputs)

    async def start(self) -> None:
        # Create what is missing (existing topics are left as their owners made them).
        await self.log.ensure_topics([
            TopicSpec(TOPIC_ROOMSERVER_OUTPUT, partitions=8),
            TopicSpec(TOPIC_RECEIPTS, partitions=8),
            TopicSpec(TOPIC_TO_DEVICE, partitions=8),
            TopicSpec(TOPIC_CLIENT_DATA, partitions=8),
            TopicSpec(TOPIC_KEY_CHANGES, partitions=8),
            TopicSpec(TOPIC_TYPING, partitions=8, retention_ms=TYPING_RETENTION_MS),
        ])
        specs = [
            (f"{self.group_prefix}.output", [TOPIC_ROOMSERVER_OUTPUT], self._handle_output),
            (f"{self.group_prefix}.receipts", [TOPIC_RECEIPTS], self._handle_receipt),
            (f"{self.group_prefix}.to_device", [TOPIC_TO_DEVICE], self._handle_to_device),
            (f"{self.group_prefix}.client_data", [TOPIC_CLIENT_DATA], self._handle_client_data),
            (f"{self.group_prefix}.key_changes", [TOPIC_KEY_CHANGES], self._handle_key_change),
            # Typing lives in memory: every instance must see all of it.
            (f"{self.group_prefix}.typing.{self.instance_id}", [TOPIC_TYPING], self._handle_typing),
        ]
        for group, topics, handler in specs:
            if handler == self._handle_output:
                # A room's queued events are projected in one transaction.
                runner = KeyedRunner(self.log.consumer(group, topics), batch_handler=self._handle_outputs,
                                     name=group)
            else:
                runner = KeyedRunner(self.log.consumer(group, topics), handler, name=group)
            await runner.start()
            self._runners.append(runner)

    async def stop(self) -> None:
        for r in self._runners:
            await r.stop()
        self._runners.clear()

    def output_assigned(self) -> bool:
        """True once the projection consumer (roomserver.output) owns partitions: until
        then (start-up, a rebalance) nothing here projects, so /ready must say no."""
        return bool(self._runners) and bool(self._runners[0].consumer.assignment())

    @staticmethod
    def _decode(record: Record) -> Any:
        try:
            return json.loads(record.value)
        except ValueError:
            log.warning("undecodable record on %s@%s", record.topic, record.offset)
            return None

    async def _handle_outputs(self, records: list[Record]) -> None:
        recs: list[OutputNewEvent] = []
        for record in records:
            obj = self._decode(record)
            try:
                rec = parse_output(obj) if obj is not None else None
            except (TypeError, ValueError) as e:
                log.warning("bad roomserver.output record at %s: %s", record.offset, e)
                continue
            if rec is not None:
                recs.append(rec)
        if recs:
            await self.outputs.submit(recs)

    async def _handle_output(self, record: Record) -> None:
        obj = self._decode(record)
        try:
            rec = parse_output(obj) if obj is not None else None
        except (TypeError, ValueError) as e:
            log.warning("bad roomserver.output record at %s: %s", record.offset, e)
            return
        if rec is not None:
            await self.projector.on_output(rec)

    async def _handle_typing(self, record: Record) -> None:
        obj = self._decode(record)
        try:
            rec = parse_typing(obj)
        except (TypeError, ValueError):
            return
        if record.timestamp_ms and rec.typing and time.time() * 1000 - record.timestamp_ms > rec.timeout_ms:
            return  # replayed after it expired
        self.projector.on_typing(rec)

    async def _handle_receipt(self, record: Record) -> None:
        try:
            rec = parse_receipt(self._decode(record))
        except (TypeError, ValueError):
            return
        await self.projector.on_receipt(rec)

    async def _handle_to_device(self, record: Record) -> None:
        try:
            rec = parse_to_device(self._decode(record))
        except (TypeError, ValueError):
            return
        await self.projector.on_to_device(rec)

    async def _handle_client_data(self, record: Record) -> None:
        try:
            rec = parse_client_data(self._decode(record))
        except (TypeError, ValueError):
            return
        await self.projector.on_client_data(rec)

    async def _handle_key_change(self, record: Record) -> None:
        try:
            rec = _from_dict(KeyChangeRecord, self._decode(record))
        except (TypeError, ValueError):
            return
        if isinstance(rec.user_id, str) and rec.user_id:
            await self.projector.on_key_change(rec)
