"""The roomserver's write path: build, sign, auth-check and commit events.

`RoomInputProcessor` is driven by the input consumer (one worker per room, so a
room's events are processed strictly one after another and never concurrently).
It keeps each room's current state and forward extremities in memory (rebuilt from
the database on first use), so sending a message costs one build + sign + auth
check and ONE database transaction: the event row, its state snapshot (only if it
changes state), current state, memberships, extremities, the outbox row, the
client transaction ID and the input's result, all together.

`handle_batch` takes every input record queued for a room at once: events are
built, signed and auth-checked one after the other in memory (each on top of the
previous one) and committed in ONE transaction with all their results; a failing
event (e.g. M_FORBIDDEN) only gets its error result, the others go on.
"""
from __future__ import annotations

import logging
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from libs.errors import MatrixError, bad_json, forbidden, room_in_use, unsupported_room_version
from libs.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    get_named_level,
    get_user_power_level,
)
from libs.events.builder import build_event
from libs.events.canonical_json import encode_canonical_json
from libs.events.event import Event
from libs.events.hashes import compute_reference_hash
from libs.events.limits import EventFormatError
from libs.events.room_versions import EventFormat, RoomVersion, UnsupportedRoomVersion, get_room_version
from libs.events.signing import SigningKey
from libs.events.unpadded_base64 import encode_base64

from services.roomserver.api import CreateRoomRequest, MissingEventsFetcher, NewEventRequest, OutputNewEvent
from services.roomserver.create import create_content, plan_after_create
from services.roomserver.state import EMPTY_SNAPSHOT, NewSnapshot, RoomInfo, plan_snapshot
from services.roomserver.storage.store import (
    NewRoomRow,
    PersistBatch,
    PersistEvent,
    RoomserverStore,
)

log = logging.getLogger(__name__)

MAX_PREV_EVENTS = 20
# Input kinds handled by services/roomserver/federated.py.
FEDERATED_KINDS = ("federated_pdus", "join_remote_room", "store_invite", "backfill")
CREATE_KEY = ("m.room.create", "")

# (outbox_nid, room_id, event_id, record JSON) rows just committed.
OutboxRows = list[tuple[int, str, str, str]]
# (kind, body, request_id) of one input record.
InputItem = tuple[str, dict[str, Any], str | None]


def now_ms() -> int:
    return int(time.time() * 1000)


def _v1_event_id(server_name: str) -> str:
    return "$" + "".join(secrets.choice(string.ascii_letters) for _ in range(18)) + ":" + server_name


def pdu_for_output(ev: Event) -> dict[str, Any]:
    """The PDU with `event_id` and `room_id` filled in (v3+ PDUs carry no event_id;
    a v12 create event carries no room_id)."""
    out = dict(ev.pdu)
    out["event_id"] = ev.event_id
    out["room_id"] = ev.room_id
    return out


def txn_key(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """The idempotency key of a client transaction: (sender, device_id, scoped txn).

    A txn ID is scoped to the device *and the request path* (spec "Transaction
    identifiers"; clients reuse e.g. "m1" in every room), so the stored txn column
    carries the room, the event type and the redacted event with the client's ID.
    Without the room, the same txn ID sent into a second room answered with the
    first room's event and the second send was silently dropped."""
    sender, device_id, txn_id = body.get("sender"), body.get("device_id"), body.get("txn_id")
    if not (isinstance(sender, str) and isinstance(device_id, str) and isinstance(txn_id, str)):
        return None
    scope = "\x1f".join(str(body.get(k) or "") for k in ("room_id", "type", "redacts"))
    return sender, device_id, f"{scope}\x1f{txn_id}"


def _req_txn_key(req: NewEventRequest) -> tuple[str, str, str] | None:
    return txn_key({"sender": req.sender, "device_id": req.device_id, "txn_id": req.txn_id,
                    "room_id": req.room_id, "type": req.type, "redacts": req.redacts})


def error_result(e: MatrixError) -> dict[str, Any]:
    return {"error": {"status": e.status, "errcode": e.errcode, "error": e.error, **e.extra}}


def result_error(result: dict[str, Any]) -> MatrixError | None:
    err = result.get("error")
    if not isinstance(err, dict):
        return None
    extra = {k: v for k, v in err.items() if k not in ("status", "errcode", "error")}
    return MatrixError(int(err.get("status", 500)), str(err.get("errcode", "M_UNKNOWN")),
                       str(err.get("error", "")), **extra)


class RoomInputProcessor:
    def __init__(
        self,
        store: RoomserverStore,
        server_name: str,
        signing_key: SigningKey,
        *,
        on_committed: Callable[[OutboxRows], None] | None = None,
        clock: Callable[[], int] = now_ms,
        max_cached_rooms: int = 2048,
        max_cached_events: int = 50_000,
        missing_events: "MissingEventsFetcher | None" = None,
    ) -> None:
        self.store = store
        self.server_name = server_name
        self.signing_key = signing_key
        self.on_committed = on_committed
        self.clock = clock
        self._rooms: OrderedDict[str, RoomInfo] = OrderedDict()
        self._events: OrderedDict[str, Event] = OrderedDict()
        self._max_rooms = max_cached_rooms
        self._max_events = max_cached_events
        from services.roomserver.federated import FederatedInput

        self.federated = FederatedInput(self, missing_events)
        # Large remote joins arrive in parts: (room_id, join_id) -> (next part, state, auth_chain).
        self._join_parts: dict[tuple[str, str], tuple[int, list[Any], list[Any]]] = {}

    # ---- caches ---------------------------------------------------------------------
    async def room(self, room_id: str) -> RoomInfo | None:
        room = self._rooms.get(room_id)
        if room is not None:
            self._rooms.move_to_end(room_id)
            return room
        room = await self.store.load_room(room_id)
        if room is not None:
            self._cache_room(room)
        return room

    def _cache_room(self, room: RoomInfo) -> None:
        self._rooms[room.room_id] = room
        self._rooms.move_to_end(room.room_id)
        while len(self._rooms) > self._max_rooms:
            self._rooms.popitem(last=False)

    def forget_room(self, room_id: str) -> None:
        """Drop a room's cached view (another replica may own it now)."""
        self._rooms.pop(room_id, None)

    def forget_all_rooms(self) -> None:
        self._rooms.clear()

    def _cache_event(self, ev: Event) -> None:
        self._events[ev.event_id] = ev
        if len(self._events) > self._max_events:
            self._events.popitem(last=False)

    async def _event(self, event_id: str) -> Event | None:
        ev = self._events.get(event_id)
        if ev is not None:
            return ev
        row = await self.store.get_event_row(event_id)
        if row is None:
            return None
        ev = Event(row.pdu, get_room_version(row.room_version), row.event_id)
        self._cache_event(ev)
        return ev

    # ---- entry points -------------------------------------------------------------------
    async def handle(self, kind: str, body: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        """Process one input record; returns its result ({"event_id"}/{"room_id"} or
        {"error": {...}}). A request ID seen before returns the stored result."""
        if request_id:
            prior = await self.store.get_input_result(request_id)
            if prior is not None:
                return prior
        try:
            if kind == "new_event":
                return (await self.send_batch([(body, request_id)]))[0]
            if kind == "create_room":
                room_id = await self.create(
                    CreateRoomRequest(**body["request"]), body["room_id"], body.get("create_event"),
                    request_id,
                )
                return {"room_id": room_id}
            if kind in FEDERATED_KINDS:
                try:
                    result = await self._federated(kind, body)
                except (MatrixError, TypeError, KeyError):
                    raise
                except Exception as e:  # hostile input must never wedge the room's worker
                    log.exception("federated input %s failed", kind)
                    raise MatrixError(500, "M_UNKNOWN", f"federated input failed: {type(e).__name__}") from None
                if request_id:
                    await self.store.put_input_result(request_id, result)
                return result
            raise bad_json(f"unknown input kind {kind!r}")
        except MatrixError as e:
            result = error_result(e)
        except (TypeError, KeyError) as e:
            result = error_result(bad_json(f"malformed input record: {e}"))
        if request_id:
            await self.store.put_input_result(request_id, result)
        return result

    def _gather_join_part(self, body: dict[str, Any], state: list[Any], auth_chain: list[Any]
                          ) -> tuple[list[Any], list[Any]] | None:
        """A part of a large join (records of one room arrive in order): None until the
        last part, then the whole (state, auth_chain). Parts lost (a restart between
        them) fail the join; the client may retry."""
        room_id, join_id, part, parts = str(body["room_id"]), str(body["join_id"]), int(body["part"]), int(body["parts"])
        key = (room_id, join_id)
        if part == 0:
            # A new attempt replaces any unfinished one of this room.
            for k in [k for k in self._join_parts if k[0] == room_id]:
                del self._join_parts[k]
            while len(self._join_parts) >= 16:
                del self._join_parts[next(iter(self._join_parts))]
            self._join_parts[key] = (0, [], [])
        got = self._join_parts.get(key)
        if got is None or got[0] != part:
            self._join_parts.pop(key, None)
            raise MatrixError(503, "M_UNKNOWN", "parts of the join's room state were lost; try again")
        _, st, ac = got
        st.extend(state)
        ac.extend(auth_chain)
        if part + 1 < parts:
            self._join_parts[key] = (part + 1, st, ac)
            return None
        del self._join_parts[key]
        return st, ac

    async def _federated(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        fed = self.federated
        if kind == "federated_pdus":
            pdus = body["pdus"]
            if not isinstance(pdus, list):
                raise TypeError("pdus must be a list")
            return await fed.receive(str(body["origin"]), str(body["room_id"]), pdus)
        if kind == "backfill":
            from services.roomserver.backfill import backfill_from_remote

            ids = body["from_event_ids"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise TypeError("from_event_ids must be a list of strings")
            return {"event_ids": await backfill_from_remote(fed, str(body["room_id"]), ids, int(body["limit"]))}
        if kind == "join_remote_room":
            state, auth_chain = list(body["state"]), list(body["auth_chain"])
            if "join_id" in body:
                gathered = self._gather_join_part(body, state, auth_chain)
                if gathered is None:
                    return {"part": int(body["part"])}
                state, auth_chain = gathered
            eid = await fed.join_remote_room(str(body["room_id"]), str(body["room_version"]), body["join_pdu"],
                                             state, auth_chain)
            return {"event_id": eid}
        allowed = ("invite", "leave", "knock") if body.get("any_membership") else ("invite",)
        eid = await fed.store_invite(str(body["room_version"]), body["invite_pdu"],
                                     list(body.get("invite_room_state") or []), allowed)
        return {"event_id": eid}

    async def handle_batch(self, items: list[InputItem]) -> list[dict[str, Any]]:
        """Process input records in order (normally all of one room); runs of
        new_event records are committed together (see `send_batch`)."""
        results: list[dict[str, Any]] = []
        i = 0
        while i < len(items):
            if items[i][0] != "new_event":
                results.append(await self.handle(*items[i]))
                i += 1
                continue
            j = i
            while j < len(items) and items[j][0] == "new_event":
                j += 1
            results.extend(await self.send_batch([(body, rid) for _k, body, rid in items[i:j]]))
            i = j
        return results

    async def send_batch(self, items: list[tuple[dict[str, Any], str | None]]) -> list[dict[str, Any]]:
        """new_event inputs (body, request_id) -> their results, in order. Per room:
        one transaction for every event and every result."""
        results: list[dict[str, Any] | None] = [None] * len(items)
        # Earlier outcomes (a redelivered input, a retried client txn): one round trip.
        txns = [t for t in (txn_key(b) for b, _rid in items) if t is not None]
        prior, known_txns = await self.store.get_prior_outcomes(
            [rid for _b, rid in items if rid], txns,
        )
        by_room: dict[str, list[tuple[int, NewEventRequest, str | None]]] = {}
        bad: list[tuple[str, dict[str, Any]]] = []
        for k, (body, rid) in enumerate(items):
            if rid and rid in prior:
                results[k] = prior[rid]
                continue
            try:
                req = NewEventRequest(**body)
                if not isinstance(req.room_id, str):
                    raise TypeError("room_id must be a string")
            except (TypeError, KeyError) as e:
                results[k] = error_result(bad_json(f"malformed input record: {e}"))
                if rid:
                    bad.append((rid, results[k]))
                continue
            by_room.setdefault(req.room_id, []).append((k, req, rid))
        if bad:
            await self.store.put_input_results(bad)
        for room_id, group in by_room.items():
            await self._send_room(room_id, group, results, known_txns)
        return [r if r is not None else error_result(bad_json("unprocessed")) for r in results]

    async def _send_room(
        self, room_id: str, group: list[tuple[int, NewEventRequest, str | None]],
        results: list[dict[str, Any] | None],
        known_txns: dict[tuple[str, str, str], str],
    ) -> None:
        room = await self.room(room_id)
        batch = PersistBatch(room_nid=room.room_nid if room else 0, events=[])
        ext_before = dict(room.extremities) if room else {}
        try:
            for k, req, rid in group:
                txn = _req_txn_key(req)
                try:
                    if txn is not None and txn in known_txns:
                        result: dict[str, Any] = {"event_id": known_txns[txn]}
                    else:
                        if not isinstance(req.content, dict):
                            raise bad_json("content must be an object")
                        if room is None:
                            raise forbidden(f"unknown room {req.room_id}")
                        rv = get_room_version(room.room_version)
                        ev = await self._build(room, rv, req.type, req.sender, req.content, req.state_key,
                                               req.redacts, req.origin_server_ts)
                        await self._check(room, ev)
                        await self._stage(room, rv, ev, batch, txn, req.device_id, req.txn_id)
                        if txn is not None:
                            known_txns[txn] = ev.event_id  # the same txn again in this batch
                        result = {"event_id": ev.event_id}
                except MatrixError as e:
                    result = error_result(e)
                results[k] = result
                if rid:
                    batch.input_results.append((rid, result))
        except BaseException:
            # Events staged so far moved the in-memory view ahead of the database.
            self.forget_room(room_id)
            raise
        if batch.events:
            assert room is not None
            await self._persist(room, batch, ext_before)
        elif batch.input_results:
            await self.store.put_input_results(batch.input_results)

    async def send(self, req: NewEventRequest, request_id: str | None = None) -> str:
        """Build, auth-check and commit one local event; returns its event ID."""
        txn = _req_txn_key(req)
        if txn is not None:
            prior = await self.store.get_txn_event(*txn)
            if prior is not None:
                return prior
        if not isinstance(req.content, dict):
            raise bad_json("content must be an object")
        room = await self.room(req.room_id)
        if room is None:
            raise forbidden(f"unknown room {req.room_id}")
        rv = get_room_version(room.room_version)
        ev = await self._build(room, rv, req.type, req.sender, req.content, req.state_key, req.redacts,
                         req.origin_server_ts)
        await self._check(room, ev)
        batch = PersistBatch(room_nid=room.room_nid, events=[])
        ext_before = dict(room.extremities)
        await self._stage(room, rv, ev, batch, txn, req.device_id, req.txn_id)
        batch.request_id = request_id
        batch.result = {"event_id": ev.event_id}
        await self._persist(room, batch, ext_before)
        return ev.event_id

    async def create(
        self,
        req: CreateRoomRequest,
        room_id: str,
        create_pdu: dict[str, Any] | None,
        request_id: str | None = None,
    ) -> str:
        """Create a room: every initial event in one transaction."""
        try:
            rv = get_room_version(req.room_version)
        except UnsupportedRoomVersion:
            raise unsupported_room_version(f"unsupported room version {req.room_version!r}") from None
        if await self.store.room_row(room_id) is not None:
            raise room_in_use(f"room {room_id} exists already")
        alias: str | None = None
        if req.room_alias_name is not None:
            alias = f"#{req.room_alias_name}:{self.server_name}"
            if await self.store.resolve_alias(alias) is not None:
                raise room_in_use("Room alias already taken")
        room = RoomInfo(room_nid=0, room_id=room_id, room_version=rv.identifier,
                        creator=req.creator, snapshot=EMPTY_SNAPSHOT)
        ts = self.clock()
        if create_pdu is not None:
            create = Event(create_pdu, rv)
            if create.room_id != room_id or create.type != "m.room.create":
                raise bad_json("create event does not match the room ID")
        else:
            create = await self._build(room, rv, "m.room.create", req.creator,
                                 create_content(req, rv), "", None, ts)
        try:
            check_auth_rules(create, {})
        except AuthError as e:
            raise forbidden(e.reason) from None
        batch = PersistBatch(
            room_nid=0, events=[],
            new_room=NewRoomRow(room_id, rv.identifier, req.creator, ts,
                                "public" if req.visibility == "public" else "private"),
            aliases=[(alias, req.creator)] if alias else [],
        )
        await self._stage(room, rv, create, batch, None, req.device_id, None)
        for planned in plan_after_create(req, rv, alias):
            ev = await self._build(room, rv, planned.type, planned.sender, planned.content,
                             planned.state_key, None, ts)
            await self._check(room, ev)
            await self._stage(room, rv, ev, batch, None, req.device_id, None)
        batch.request_id = request_id
        batch.result = {"room_id": room_id}
        await self._persist(room, batch, {})
        return room_id

    # ---- building and checking -------------------------------------------------------------
    async def _build(
        self,
        room: RoomInfo,
        rv: RoomVersion,
        etype: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None,
        redacts: str | None,
        ts: int | None,
    ) -> Event:
        prevs = sorted(room.extremities.items(), key=lambda kv: kv[1][1], reverse=True)[:MAX_PREV_EVENTS]
        depth = max(d for _, (_, d) in prevs) + 1 if prevs else 1
        auth_keys = auth_types_for_event(rv, etype, sender, state_key, content)
        auth_ids = [room.state[k][0] for k in sorted(auth_keys) if k in room.state]
        prev_ids = [eid for eid, _ in prevs]
        event_id: str | None = None
        refs: dict[str, dict[str, str]] | None = None
        if rv.event_format is EventFormat.V1:
            event_id = _v1_event_id(self.server_name)
            refs = {}
            for eid in [*prev_ids, *auth_ids]:
                ref_ev = await self._event(eid)
                if ref_ev is not None:
                    refs[eid] = {"sha256": encode_base64(compute_reference_hash(ref_ev.pdu, rv))}
        is_create = etype == "m.room.create"
        try:
            return build_event(
                rv, type=etype, sender=sender,
                room_id=None if (is_create and rv.hydra) else room.room_id,
                content=content, prev_events=prev_ids, auth_events=auth_ids, depth=depth,
                origin_server_ts=ts if ts is not None else self.clock(),
                server_name=self.server_name, signing_key=self.signing_key,
                state_key=state_key, redacts=redacts, event_id=event_id, reference_hashes=refs,
            )
        except EventFormatError as e:
            status = 413 if e.errcode == "M_TOO_LARGE" else 400
            raise MatrixError(status, e.errcode, str(e)) from None
        except (ValueError, TypeError) as e:  # e.g. content not encodable as canonical JSON
            raise bad_json(str(e)) from None

    async def _check(self, room: RoomInfo, ev: Event) -> None:
        """The auth rules against the room's current state (raises M_FORBIDDEN)."""
        rv = ev.room_version
        keys = auth_types_for_event(rv, ev.type, ev.sender, ev.state_key, ev.content)
        keys.add(CREATE_KEY)
        auth_state: dict[tuple[str, str], Event] = {}
        for k in keys:
            entry = room.state.get(k)
            if entry is not None:
                aev = await self._event(entry[0])
                if aev is not None:
                    auth_state[k] = aev
        try:
            check_auth_rules(ev, auth_state)
        except AuthError as e:
            raise forbidden(e.reason) from None
        if ev.type == "m.room.redaction" and rv.event_format is not EventFormat.V1:
            # v3+: the redaction is allowed by the rules; whether it takes effect is
            # ours to check: the sender needs the redact level or must redact their own.
            if get_user_power_level(ev.sender, auth_state) < get_named_level(auth_state, "redact"):
                target_id = ev.redacts
                target = await self._event(target_id) if target_id else None
                if target is None or target.sender != ev.sender or target.room_id != ev.room_id:
                    raise forbidden("you may only redact your own events")

    # ---- staging and persisting -----------------------------------------------------------------
    async def _stage(
        self,
        room: RoomInfo,
        rv: RoomVersion,
        ev: Event,
        batch: PersistBatch,
        txn: tuple[str, str, str] | None,
        device_id: str | None,
        txn_id: str | None,
    ) -> None:
        """Add `ev` to `batch` and advance the room's in-memory view past it."""
        type_nid = (await self.store.intern_types([ev.type]))[ev.type]
        sk = ev.state_key
        sk_nid = (await self.store.intern_state_keys([sk]))[sk] if sk is not None else None
        before = room.snapshot
        after = before
        added: list[str] = []
        removed: list[str] = []
        if sk is not None and sk_nid is not None:
            key = (type_nid, sk_nid)
            old = room.nid_state.get(key)
            after, eff = plan_snapshot(before, room.nid_state, {key: (ev.event_id, 0)})
            if eff:
                added.append(ev.event_id)
                if old is not None:
                    removed.append(old[0])
                room.nid_state[key] = (ev.event_id, 0)
                room.state[(ev.type, sk)] = (ev.event_id, 0)
                room.snapshot = after
                batch.state_changes[key] = ev.event_id
                if ev.type == "m.room.member" and isinstance(ev.membership, str):
                    batch.membership_changes[sk] = (ev.membership, ev.event_id)
        output = OutputNewEvent(
            event=pdu_for_output(ev), room_version=rv.identifier, state_added=added,
            state_removed=removed, device_id=device_id, txn_id=txn_id,
            last_sent_event_id=room.last_sent_event_id,
        )
        batch.events.append(PersistEvent(
            event_id=ev.event_id, json=encode_canonical_json(ev.pdu, strict=rv.strict_canonicaljson).decode(),
            type_nid=type_nid, state_key_nid=sk_nid, depth=ev.depth, before=before, after=after,
            txn=txn, output=asdict(output), state_tuple=(ev.type, sk) if sk is not None else None,
        ))
        for pid in ev.prev_event_ids:
            room.extremities.pop(pid, None)
        room.extremities[ev.event_id] = (0, ev.depth)
        room.last_sent_event_id = ev.event_id
        batch.last_sent_event_id = ev.event_id
        self._cache_event(ev)

    async def _persist(
        self, room: RoomInfo, batch: PersistBatch, ext_before: dict[str, tuple[int, int]]
    ) -> None:
        batch.extremities_removed = [nid for eid, (nid, _) in ext_before.items() if eid not in room.extremities]
        batch.extremities_added = [eid for eid in room.extremities if eid not in ext_before]
        if isinstance(room.snapshot, NewSnapshot) or batch.state_changes:
            batch.current_snapshot = room.snapshot
        try:
            result = await self.store.persist(batch)
        except BaseException:
            # The in-memory view ran ahead of the database: rebuild it on next use.
            self.forget_room(room.room_id)
            raise
        nids = {pe.event_id: pe.event_nid for pe in batch.events}
        if batch.new_room is not None:
            room.room_nid = result.room_nid
        for pe in batch.events:
            if pe.state_key_nid is None or pe.state_tuple is None:
                continue
            key = (pe.type_nid, pe.state_key_nid)
            entry = room.nid_state.get(key)
            if entry is not None and entry[1] == 0 and entry[0] in nids:
                room.nid_state[key] = (entry[0], nids[entry[0]])
            sentry = room.state.get(pe.state_tuple)
            if sentry is not None and sentry[1] == 0 and sentry[0] in nids:
                room.state[pe.state_tuple] = (sentry[0], nids[sentry[0]])
        for eid, (nid, depth) in list(room.extremities.items()):
            if nid == 0 and eid in nids:
                room.extremities[eid] = (nids[eid], depth)
        if isinstance(room.snapshot, NewSnapshot):
            room.snapshot = room.snapshot.info()
        if batch.new_room is not None:
            self._cache_room(room)
        if self.on_committed is not None and result.outbox:
            self.on_committed(result.outbox)
