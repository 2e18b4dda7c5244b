"""Federated input: PDUs from other servers, processed by the room's single worker.

Called from `RoomInputProcessor.handle` for the input kinds "federated_pdus",
"join_remote_room" and "store_invite". Per PDU (in order of depth):

1. format (`check_pdu_format`), room ID, and the event ID computed here (a PDU's own
   `event_id` is never trusted for v3+ rooms); already stored -> accepted, no-op;
2. auth events: missing ones are asked of the origin (`/event_auth` through the
   `MissingEventsFetcher`) and stored as outliers after their own checks; still missing
   -> not stored, error. Then `check_event_auth` against them (a rejected auth event,
   one from another room... -> stored as rejected, never in any state, not published);
3. prev_events we do not have are asked of the origin (`get_missing_events`, at most
   `MISSING_EVENTS_LIMIT` events, each processed like any PDU, no recursion; at most
   `MAX_FETCHES_PER_INPUT` fetches of either kind per input record); prevs still unknown
   are ignored: the state before the event is resolved over the prevs we have (none with
   known state -> the room's current state stands in);
4. the state before the event: its single prev's state after, or `resolve_state` over
   the prevs' states; the auth rules against it (fail -> rejected; soft-failed when that
   state was approximated because prevs are missing);
5. soft-fail: the auth rules against the room's current state (fail -> stored with its
   state, never a forward extremity, never in current state; published with
   `soft_failed=True`, which consumers drop). A v3+ redaction that may not take effect
   is accepted but published the same way;
6. otherwise accepted: state snapshots, forward extremities (prevs out, event in),
   current state = the state after the event when it descends from every extremity,
   else the resolution of the states after every forward extremity; memberships; outbox.

Each PDU is committed in its own transaction (a transaction carries at most 50), except
runs of non-state events descending from every forward extremity (the fast path: state
before = current state, no state change), committed together before anything else.
Outliers (auth chains, join-response state, invites) are stored with before = after
snapshot 0: "state unknown".
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from libs.errors import MatrixError, bad_json, forbidden, not_found
from libs.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    check_event_auth,
    get_named_level,
    get_user_power_level,
)
from libs.events.canonical_json import encode_canonical_json
from libs.events.event import Event
from libs.events.hashes import compute_event_id
from libs.events.limits import EventFormatError, check_pdu_format
from libs.events.room_versions import EventFormat, RoomVersion, UnsupportedRoomVersion, get_room_version
from libs.events.state_res import StateResolutionError, resolve_state

from services.roomserver.api import MissingEventsFetcher, OutputNewEvent
from services.roomserver.state import (
    EMPTY_SNAPSHOT,
    NidState,
    RoomInfo,
    SnapshotInfo,
    SnapshotRef,
    plan_snapshot,
    state_hash,
)
from services.roomserver.storage.store import NewRoomRow, PersistBatch, PersistEvent

if TYPE_CHECKING:
    from services.roomserver.input import RoomInputProcessor

log = logging.getLogger(__name__)

MISSING_EVENTS_LIMIT = 10
MISSING_EVENTS_TIMEOUT_S = 10.0
# Gaps filled per input record (a transaction's PDUs of one room); later gaps use the known prevs.
MAX_FETCHES_PER_INPUT = 2
MAX_AUTH_FETCH = 1000  # events of one /event_auth answer
MAX_EVENT_FETCH = 20  # single /event requests for the auth events of one PDU
MAX_STATE_FETCHES_PER_INPUT = 4  # auth / gap-state fetches of one input record
MAX_GAPS = 2  # prevs of one event whose state is asked for
MAX_STATE_FETCH = 200  # single /event requests for the state at one gap
CREATE_KEY = ("m.room.create", "")
# A state: (type, state_key) -> (event_id, event_nid); nid 0 = written in this transaction.
State = dict[tuple[str, str], tuple[str, int]]


class RejectedError(Exception):
    """The event is stored as rejected (never in state) for this reason."""


class NotStoredError(Exception):
    """The event is not stored at all (missing auth events, malformed...)."""


def event_id_of(pdu: dict[str, Any], rv: RoomVersion) -> str:
    if rv.event_format is EventFormat.V1 and not str(pdu.get("event_id", "")).startswith("$"):
        raise NotStoredError("v1/v2 event without a valid event_id")
    return compute_event_id(pdu, rv)


def stored_form(pdu: dict[str, Any], rv: RoomVersion, keep_unsigned: bool = False) -> dict[str, Any]:
    """What we keep of a remote PDU: no `unsigned` (remote claims), no event_id for v3+."""
    out = {k: v for k, v in pdu.items() if keep_unsigned or k != "unsigned"}
    if rv.event_format is not EventFormat.V1:
        out.pop("event_id", None)
    return out


class _Loader:
    """`EventLoader` for state resolution over the roomserver's events."""

    def __init__(self, proc: "RoomInputProcessor") -> None:
        self.proc = proc
        self.rejected: set[str] = set()

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        out: dict[str, Event] = {}
        rest: list[str] = []
        for eid in event_ids:
            ev = self.proc._events.get(eid)
            if ev is not None:
                out[eid] = ev
            else:
                rest.append(eid)
        if rest:
            for row in await self.proc.store.get_event_rows(rest):
                ev = Event(row.pdu, get_room_version(row.room_version), row.event_id)
                if row.rejected:
                    self.rejected.add(row.event_id)
                out[row.event_id] = ev
        return out


class FederatedInput:
    def __init__(self, proc: "RoomInputProcessor", fetcher: MissingEventsFetcher | None = None,
                 max_cached_snapshots: int = 256) -> None:
        self.proc = proc
        self.store = proc.store
        self.fetcher = fetcher
        self._snapshots: OrderedDict[int, State] = OrderedDict()
        self._fetch_budget = 0  # set per input record by `receive`
        self._state_budget = 0  # likewise, for auth events and the state at gaps
        # Fast-path events staged by `receive`, committed together by `_flush`.
        self._batching = False
        self._pending: PersistBatch | None = None
        self._pending_ext_before: dict[str, tuple[int, int]] = {}
        self._pending_ids: set[str] = set()
        self._infos: dict[int, SnapshotInfo] = {}  # snapshots never change
        self._max_snapshots = max_cached_snapshots

    # ---- states ---------------------------------------------------------------------
    async def snapshot_state(self, snapshot_nid: int) -> State:
        """A stored snapshot as (type, state_key) -> (event_id, nid); snapshots never change."""
        if snapshot_nid == 0:
            return {}
        got = self._snapshots.get(snapshot_nid)
        if got is not None:
            self._snapshots.move_to_end(snapshot_nid)
            return got
        entries = await self.store.snapshot_entries(snapshot_nid)
        names = await self.store.state_names(entries)
        state = {names[k]: v for k, v in entries.items()}
        self._snapshots[snapshot_nid] = state
        while len(self._snapshots) > self._max_snapshots:
            self._snapshots.popitem(last=False)
        return state

    async def _snapshot_info(self, snapshot_nid: int) -> SnapshotInfo:
        info = self._infos.get(snapshot_nid)
        if info is None:
            info = await self.store.snapshot_info(snapshot_nid)
            if len(self._infos) >= 4 * self._max_snapshots:
                self._infos.clear()
            self._infos[snapshot_nid] = info
        return info

    async def _nid_state(self, state: State) -> NidState:
        types = await self.store.intern_types({t for t, _ in state})
        sks = await self.store.intern_state_keys({s for _, s in state})
        return {(types[t], sks[s]): v for (t, s), v in state.items()}

    async def _snapshot_for(self, room: RoomInfo, state: State, parent: tuple[SnapshotInfo, State] | None
                            ) -> SnapshotRef:
        """A snapshot holding exactly `state`: an existing one, or a delta over `parent`."""
        nid_state = await self._nid_state(state)
        h = state_hash(nid_state)
        if room.room_nid:
            found = await self.store.find_snapshot(room.room_nid, h)
            if found is not None:
                return await self.store.snapshot_info(found)
        if parent is None:
            base, base_nid_state = EMPTY_SNAPSHOT, {}
        else:
            base, base_nid_state = parent[0], await self._nid_state(parent[1])
        changes: dict[tuple[int, int], tuple[str, int] | None] = dict(nid_state)
        for k in base_nid_state:
            if k not in nid_state:
                changes[k] = None
        snap, _eff = plan_snapshot(base, base_nid_state, changes)
        return snap

    async def _resolve(self, rv: RoomVersion, states: list[State]) -> State:
        if len(states) == 1:
            return dict(states[0])
        entries: dict[str, int] = {}
        for s in states:
            for eid, nid in s.values():
                if nid:
                    entries[eid] = nid
                else:
                    entries.setdefault(eid, 0)
        loader = _Loader(self.proc)
        try:
            resolved = await resolve_state(rv, [{k: v[0] for k, v in s.items()} for s in states], loader,
                                           rejected_event_ids=loader.rejected)
        except StateResolutionError as e:
            raise RejectedError(f"state resolution failed: {e}") from None
        # v2 may pick events of the auth difference, which no input state holds.
        unknown = [eid for eid in resolved.values() if eid not in entries]
        if unknown:
            for row in await self.store.get_event_rows(list(dict.fromkeys(unknown))):
                entries[row.event_id] = row.event_nid
        return {k: (eid, entries.get(eid, 0)) for k, eid in resolved.items() if eid in entries}

    async def _auth_state(self, ev: Event, state: State) -> dict[tuple[str, str], Event]:
        keys = auth_types_for_event(ev.room_version, ev.type, ev.sender, ev.state_key, ev.content)
        keys.add(CREATE_KEY)
        out: dict[tuple[str, str], Event] = {}
        for k in keys:
            entry = state.get(k)
            if entry is not None:
                aev = await self.proc._event(entry[0])
                if aev is not None:
                    out[k] = aev
        return out

    # ---- input: PDUs of one room ----------------------------------------------------------
    async def receive(self, origin: str, room_id: str, pdus: list[Any]) -> dict[str, Any]:
        """-> {"results": {event_id: None | error}, "soft_failed": [event_id...]}"""
        results: dict[str, str | None] = {}
        soft: list[str] = []
        room = await self.proc.room(room_id)
        if room is None or CREATE_KEY not in room.state:
            # Unknown room, or one we only hold an invite for: we are not in it.
            for p in pdus:
                eid = self._try_event_id(p, room)
                if eid is not None:
                    results[eid] = f"not in room {room_id}"
            return {"results": results, "soft_failed": soft}
        rv = get_room_version(room.room_version)
        events: list[Event] = []
        for p in pdus:
            try:
                ev = self._parse(p, rv, room_id)
            except NotStoredError as e:
                eid = self._try_event_id(p, room)
                if eid is not None:
                    results[eid] = str(e)
                continue
            if ev.event_id not in results:
                results[ev.event_id] = None
                events.append(ev)
        events.sort(key=lambda e: e.depth)
        self._fetch_budget = MAX_FETCHES_PER_INPUT  # the room's worker (and the /send answer) waits for each
        self._state_budget = MAX_STATE_FETCHES_PER_INPUT
        self._batching = True
        try:
            for ev in events:
                try:
                    outcome = await self.process(room, rv, origin, ev, fetch_missing=True)
                except NotStoredError as e:
                    results[ev.event_id] = str(e)
                    continue
                if outcome == "soft_failed":
                    soft.append(ev.event_id)
                elif outcome != "accepted":
                    results[ev.event_id] = outcome
            await self._flush(room)
        except BaseException:
            self._pending, self._pending_ids = None, set()
            self.proc.forget_room(room.room_id)
            raise
        finally:
            self._batching = False
        return {"results": results, "soft_failed": soft}

    # ---- the fast path: a linear run of non-state events, committed together ----------------
    def _fast_path(self, room: RoomInfo, ev: Event, rows: dict[str, Any]) -> bool:
        """A message (no state) that descends from every forward extremity and cites
        stored auth events: its state before IS the current state, and it changes no
        state, so it can wait in memory and be committed with the next ones."""
        return (self._batching and not ev.is_state() and bool(room.extremities)
                and set(ev.prev_event_ids) == set(room.extremities)
                and all(a in rows for a in ev.full_auth_event_ids)
                and isinstance(room.snapshot, SnapshotInfo) and room.snapshot.nid != 0)

    async def _stage_fast(self, room: RoomInfo, rv: RoomVersion, ev: Event, deliver: bool) -> None:
        type_nid = (await self.store.intern_types([ev.type]))[ev.type]
        if self._pending is None:
            self._pending = PersistBatch(room_nid=room.room_nid, events=[])
            self._pending_ext_before = dict(room.extremities)
        snap = room.snapshot
        output = OutputNewEvent(event=_pdu_for_output(ev), room_version=rv.identifier, state_added=[],
                                state_removed=[], soft_failed=not deliver,
                                last_sent_event_id=room.last_sent_event_id)
        self._pending.events.append(PersistEvent(
            event_id=ev.event_id, json=encode_canonical_json(ev.pdu, strict=rv.strict_canonicaljson).decode(),
            type_nid=type_nid, state_key_nid=None, depth=ev.depth, before=snap, after=snap, output=asdict(output),
        ))
        for pid in ev.prev_event_ids:
            room.extremities.pop(pid, None)
        room.extremities[ev.event_id] = (0, ev.depth)
        room.last_sent_event_id = ev.event_id
        self._pending.last_sent_event_id = ev.event_id
        self._pending_ids.add(ev.event_id)
        self.proc._cache_event(ev)

    async def _flush(self, room: RoomInfo) -> None:
        """Commit the staged fast-path events (before anything that reads the database)."""
        if self._pending is None:
            return
        batch, ext_before = self._pending, self._pending_ext_before
        self._pending, self._pending_ids = None, set()
        await self.proc._persist(room, batch, ext_before)

    def _may_fetch(self, fetch_missing: bool) -> bool:
        if not fetch_missing or self.fetcher is None or self._fetch_budget <= 0:
            return False
        self._fetch_budget -= 1
        return True

    def _may_fetch_state(self, fetch_state: bool) -> bool:
        """Auth events / state at a gap: a budget of its own (one input record)."""
        if not fetch_state or self.fetcher is None or self._state_budget <= 0:
            return False
        self._state_budget -= 1
        return True

    def _try_event_id(self, pdu: Any, room: RoomInfo | None) -> str | None:
        if not isinstance(pdu, dict):
            return None
        try:
            if room is None:
                # Version unknown: the PDU's own ID (v1/v2) or the v4+ hash (a guess, only to name it).
                eid = pdu.get("event_id")
                return eid if isinstance(eid, str) else compute_event_id(pdu, get_room_version("10"))
            return event_id_of(pdu, get_room_version(room.room_version))
        except Exception:
            return None

    @staticmethod
    def _parse(pdu: Any, rv: RoomVersion, room_id: str | None) -> Event:
        try:
            check_pdu_format(pdu, rv)
        except EventFormatError as e:
            raise NotStoredError(f"{e.errcode}: {e}") from None
        try:
            eid = event_id_of(pdu, rv)
        except NotStoredError:
            raise
        except Exception as e:
            raise NotStoredError(f"cannot compute the event ID: {e}") from None
        ev = Event(stored_form(pdu, rv), rv, eid)
        if room_id is not None and ev.room_id != room_id:
            raise NotStoredError(f"event belongs to room {ev.room_id!r}, not {room_id}")
        return ev

    async def process(self, room: RoomInfo, rv: RoomVersion, origin: str, ev: Event, *,
                      fetch_missing: bool, fetch_state: bool = False) -> str:
        """Check and commit one event: "accepted", "soft_failed", or the rejection
        reason (stored as rejected). Raises NotStoredError when nothing is stored.

        fetch_missing: (a pushed event) may ask the origin for missing prevs
        (get_missing_events) and auth events. fetch_state (an event get_missing_events
        brought, whose earliest prevs are the gap): may ask for missing auth events and for
        the state at a prev we lack or hold as an outlier (/state_ids, /event). A pushed
        event never asks for the state at its missing prevs (as Synapse: the sender would
        have given them to get_missing_events)."""
        auth_ids = ev.full_auth_event_ids
        prev_ids = ev.prev_event_ids
        # One query for the event itself (dedupe), its auth events and its prevs.
        rows = {r.event_id: r for r in await self.store.get_event_rows(
            list(dict.fromkeys([ev.event_id, *auth_ids, *prev_ids])))}
        if ev.event_id in self._pending_ids:
            return "accepted"
        existing = rows.get(ev.event_id)
        if existing is not None:
            if existing.room_id != room.room_id:
                raise NotStoredError("event ID already used in another room")
            return "soft_failed" if existing.soft_failed else (
                f"rejected: {ev.event_id} was rejected before" if existing.rejected else "accepted")
        if ev.type == "m.room.create":
            raise NotStoredError("the room already has a create event")
        if self._fast_path(room, ev, rows):
            auth_events = [Event(rows[a].pdu, get_room_version(rows[a].room_version), a)
                           for a in dict.fromkeys(auth_ids)]
            try:
                check_event_auth(ev, auth_events,
                                 rejected_event_ids={a for a in auth_ids if rows[a].rejected})
                check_auth_rules(ev, await self._auth_state(ev, room.state))
            except AuthError:
                pass  # the ordinary path stores the rejection, with its reason
            else:
                await self._stage_fast(room, rv, ev, await self._redaction_may_apply(room, ev))
                return "accepted"
        await self._flush(room)  # the ordinary path reads the database
        # Auth events: all must be known; missing ones are asked of the origin (its
        # /event_auth of the event), stored as outliers once they pass their own checks.
        auth_rows = {a: rows[a] for a in auth_ids if a in rows}
        missing_auth = [a for a in auth_ids if a not in auth_rows]
        if missing_auth and (self._may_fetch(fetch_missing) or self._may_fetch_state(fetch_state)):
            await self._fetch_auth(room, rv, origin, ev)
            auth_rows = {r.event_id: r for r in await self.store.get_event_rows(list(dict.fromkeys(auth_ids)))}
            missing_auth = [a for a in auth_ids if a not in auth_rows]
        if missing_auth:
            raise NotStoredError(f"missing auth events: {', '.join(missing_auth[:5])}")
        auth_events = [Event(r.pdu, get_room_version(r.room_version), r.event_id) for r in auth_rows.values()]
        rejected_auth = {r.event_id for r in auth_rows.values() if r.rejected}
        try:
            check_event_auth(ev, auth_events, rejected_event_ids=rejected_auth)
        except AuthError as e:
            await self._commit(room, rv, ev, None, None, f"auth events: {e.reason}")
            return f"rejected: {e.reason}"

        # prev_events: fetch what we miss (bounded), then the state before the event.
        prev_rows = {p: rows[p] for p in prev_ids if p in rows}
        if any(p not in prev_rows for p in prev_ids) and self._may_fetch(fetch_missing):
            await self._fetch_missing(room, rv, origin, ev)
            prev_rows = {r.event_id: r for r in await self.store.get_event_rows(list(dict.fromkeys(prev_ids)))}
        with_state = [r for r in prev_rows.values()
                      if r.room_id == room.room_id and r.after_snapshot_nid != 0]
        # Prevs still missing, or outliers: the state after them from the origin.
        gaps = [p for p in dict.fromkeys(prev_ids)
                if p not in prev_rows or (prev_rows[p].room_id == room.room_id
                                          and prev_rows[p].after_snapshot_nid == 0)]
        gap_states: list[State] = []
        if gaps and not fetch_missing and self._may_fetch_state(fetch_state):
            for p in gaps[:MAX_GAPS]:
                got = await self._state_at_gap(room, rv, origin, p)
                if got is not None:
                    gap_states.append(got)
        # Approximated (prevs missing or outliers): a failure against it is a soft-fail,
        # not a rejection — the event's real state before may allow it.
        state_known = len(with_state) + len(gap_states) == len(set(prev_ids))
        if gap_states:
            states = [await self.snapshot_state(r.after_snapshot_nid) for r in with_state] + gap_states
            try:
                before_state = await self._resolve(rv, states)
            except RejectedError as e:
                await self._commit(room, rv, ev, None, None, str(e))
                return f"rejected: {e}"
            parent = ((await self._snapshot_info(with_state[0].after_snapshot_nid), states[0])
                      if with_state else None)
            before_ref = await self._snapshot_for(room, before_state, parent)
        elif not with_state:
            # No prev with known state (all missing, or outliers): the current state
            # stands in for it (documented limitation).
            before_state: State = dict(room.state)
            before_ref: SnapshotRef = room.snapshot
            if not isinstance(before_ref, SnapshotInfo) or before_ref.nid == 0:
                before_ref = await self._snapshot_for(room, before_state, None)
        elif len(with_state) == 1:
            r = with_state[0]
            before_state = await self.snapshot_state(r.after_snapshot_nid)
            before_ref = await self._snapshot_info(r.after_snapshot_nid)
        else:
            states = [await self.snapshot_state(r.after_snapshot_nid) for r in with_state]
            try:
                before_state = await self._resolve(rv, states)
            except RejectedError as e:
                await self._commit(room, rv, ev, None, None, str(e))
                return f"rejected: {e}"
            first = with_state[0]
            before_ref = await self._snapshot_for(
                room, before_state, (await self._snapshot_info(first.after_snapshot_nid), states[0]))
        soft_failed = False
        try:
            check_auth_rules(ev, await self._auth_state(ev, before_state))
        except AuthError as e:
            if state_known:
                await self._commit(room, rv, ev, before_ref, before_state, f"state before: {e.reason}")
                return f"rejected: {e.reason}"
            log.info("soft-failing %s from %s (state before unknown): %s", ev.event_id, origin, e.reason)
            soft_failed = True
        try:
            check_auth_rules(ev, await self._auth_state(ev, room.state))
        except AuthError as e:
            log.info("soft-failing %s from %s: %s", ev.event_id, origin, e.reason)
            soft_failed = True
        deliver = soft_failed or await self._redaction_may_apply(room, ev)
        await self._commit(room, rv, ev, before_ref, before_state, None, soft_failed=soft_failed,
                           deliver=deliver)
        return "soft_failed" if soft_failed else "accepted"

    async def _redaction_may_apply(self, room: RoomInfo, ev: Event) -> bool:
        """v3+ auth rules accept every redaction; whether it takes effect is ours to say
        (spec: the sender has the redact level, or the target's sender is of the same
        server). One that may not is kept in the DAG but never delivered (consumers
        would apply it)."""
        if ev.type != "m.room.redaction" or ev.room_version.event_format is EventFormat.V1:
            return True
        state = await self._auth_state(ev, room.state)
        if get_user_power_level(ev.sender, state) >= get_named_level(state, "redact"):
            return True
        target = await self.proc._event(ev.redacts) if ev.redacts else None
        return target is not None and target.room_id == ev.room_id and target.origin == ev.origin

    async def _fetch_missing(self, room: RoomInfo, rv: RoomVersion, origin: str, ev: Event) -> None:
        assert self.fetcher is not None
        # No depth floor: the missing branch forked somewhere below our extremities (a
        # partition: both sides grew), so their depths would cut it off; the walk stops
        # at our extremities and at MISSING_EVENTS_LIMIT events anyway.
        min_depth = 0
        try:
            # Bounded in time too: the room's worker waits meanwhile.
            pdus = await asyncio.wait_for(self.fetcher.get_missing_events(
                origin, room.room_id, list(room.extremities), [ev.event_id], MISSING_EVENTS_LIMIT, min_depth),
                MISSING_EVENTS_TIMEOUT_S)
        except Exception as e:  # the remote is down or hostile: go on with what we have
            log.info("get_missing_events from %s for %s failed: %s", origin, ev.event_id, e)
            return
        got: list[Event] = []
        for p in pdus[:MISSING_EVENTS_LIMIT] if isinstance(pdus, list) else []:
            try:
                got.append(self._parse(p, rv, room.room_id))
            except NotStoredError as e:
                log.info("dropping a missing event from %s: %s", origin, e)
        for m in sorted(got, key=lambda e: e.depth):
            if m.event_id == ev.event_id:
                continue
            try:
                # No get_missing_events of its own, but the earliest may stand at a gap.
                await self.process(room, rv, origin, m, fetch_missing=False, fetch_state=True)
            except NotStoredError as e:
                log.info("missing event %s from %s not stored: %s", m.event_id, origin, e)
        await self._flush(room)  # the caller reads its prevs from the database next

    async def _fetch_auth(self, room: RoomInfo, rv: RoomVersion, origin: str, ev: Event) -> None:
        get_event_auth = getattr(self.fetcher, "get_event_auth", None)
        pdus: Any = []
        if get_event_auth is not None:
            try:
                pdus = await asyncio.wait_for(get_event_auth(origin, room.room_id, ev.event_id),
                                              MISSING_EVENTS_TIMEOUT_S)
            except Exception as e:  # the remote is down or hostile: try the events one by one
                log.info("event_auth from %s for %s failed: %s", origin, ev.event_id, e)
        fetched: dict[str, Event] = {}
        for p in pdus[:MAX_AUTH_FETCH] if isinstance(pdus, list) else []:
            try:
                e = self._parse(p, rv, room.room_id)
            except NotStoredError as err:
                log.info("dropping an auth event from %s: %s", origin, err)
                continue
            if e.type != "m.room.create":  # the room's create event is ours already
                fetched[e.event_id] = e
        # What the answer lacked (or no /event_auth at all): the events themselves.
        await self._fetch_events(room, rv, origin, list(ev.full_auth_event_ids), fetched)
        await self.store_outliers(room, rv, fetched)

    async def _fetch_events(self, room: RoomInfo, rv: RoomVersion, origin: str, wanted: list[str],
                            fetched: dict[str, Event], limit: int = MAX_EVENT_FETCH) -> None:
        """`GET /event` of each of `wanted` (and, level by level, of the auth events they
        cite) that is neither stored nor in `fetched`; adds them to `fetched`. At most
        `limit` requests, a few at a time."""
        get_event = getattr(self.fetcher, "get_event", None)
        if get_event is None:
            return
        budget = limit
        todo = list(dict.fromkeys(wanted))
        while todo and budget > 0:
            stored = {r.event_id for r in await self.store.get_event_rows(todo)}
            todo = [e for e in todo if e not in stored and e not in fetched][:budget]
            if not todo:
                return
            budget -= len(todo)

            async def one(eid: str) -> Any:
                try:
                    return await asyncio.wait_for(get_event(origin, room.room_id, eid), MISSING_EVENTS_TIMEOUT_S)
                except Exception as e:
                    log.info("event %s from %s not fetched: %s", eid, origin, e)
                    return None

            got: list[Any] = []
            for i in range(0, len(todo), 8):
                got += await asyncio.gather(*(one(eid) for eid in todo[i:i + 8]))
            nxt: list[str] = []
            for want, p in zip(todo, got):
                if not isinstance(p, dict):
                    continue
                try:
                    e = self._parse(p, rv, room.room_id)
                except NotStoredError as err:
                    log.info("dropping event %s from %s: %s", want, origin, err)
                    continue
                if e.event_id != want or e.type == "m.room.create":
                    continue
                fetched[e.event_id] = e
                nxt += [a for a in e.full_auth_event_ids if a not in fetched]
            todo = nxt

    async def _state_at_gap(self, room: RoomInfo, rv: RoomVersion, origin: str, prev_id: str) -> State | None:
        """The state after `prev_id`, a prev event we lack or hold as an outlier: the
        origin's /state_ids at it, the events we miss fetched (/event) and stored as
        outliers, plus `prev_id` itself when it is a state event. None if that fails."""
        get_state_ids = getattr(self.fetcher, "get_state_ids", None)
        if get_state_ids is None:
            return None
        try:
            pdu_ids, chain_ids = await asyncio.wait_for(get_state_ids(origin, room.room_id, prev_id),
                                                        MISSING_EVENTS_TIMEOUT_S)
        except Exception as e:
            log.info("state_ids from %s at %s failed: %s", origin, prev_id, e)
            return None
        if not pdu_ids:
            return None
        fetched: dict[str, Event] = {}
        await self._fetch_events(room, rv, origin, [prev_id, *pdu_ids, *chain_ids], fetched,
                                 limit=MAX_STATE_FETCH)
        await self.store_outliers(room, rv, fetched)
        rows = {r.event_id: r for r in await self.store.get_event_rows(list(dict.fromkeys([*pdu_ids, prev_id])))}
        state: State = {}
        for eid in [*pdu_ids, prev_id]:
            r = rows.get(eid)
            if r is None:
                if eid != prev_id:
                    # An incomplete state would mislead the auth checks.
                    log.info("state at %s from %s unusable: %s missing", prev_id, origin, eid)
                    return None
                continue
            if r.rejected or r.room_id != room.room_id:
                continue  # a rejected event is in no state (the origin's view aside)
            t, sk = r.pdu.get("type"), r.pdu.get("state_key")
            if isinstance(t, str) and isinstance(sk, str):
                state[(t, sk)] = (eid, r.event_nid)
        log.info("state at gap %s from %s: %d events (%d fetched)", prev_id, origin, len(state), len(fetched))
        return state if CREATE_KEY in state else None

    async def store_outliers(self, room: RoomInfo, rv: RoomVersion, events: dict[str, Event]) -> set[str]:
        """Store `events` without state (before = after = 0), in auth order, each checked
        against its own auth events (fetched here or stored); failures are stored rejected.
        Returns the IDs rejected."""
        already = {r.event_id for r in await self.store.get_event_rows(list(events))}
        cited = {a for e in events.values() for a in e.full_auth_event_ids if a not in events}
        stored = {r.event_id: r for r in await self.store.get_event_rows(sorted(cited))}
        known: dict[str, Event] = {eid: Event(r.pdu, get_room_version(r.room_version), eid)
                                   for eid, r in stored.items() if r.room_id == room.room_id}
        rejected = {eid for eid, r in stored.items() if r.rejected}
        batch = PersistBatch(room_nid=room.room_nid, events=[])
        for e in self._auth_order(events):
            reason: str | None = None
            try:
                if e.type == "m.room.create":
                    check_auth_rules(e, {})
                else:
                    check_event_auth(e, [known[a] for a in e.full_auth_event_ids if a in known],
                                     rejected_event_ids=rejected)
            except AuthError as err:
                reason = err.reason
                rejected.add(e.event_id)
            known[e.event_id] = e
            if e.event_id not in already:
                batch.events.append(await self._outlier_row(rv, e, reason))
            if reason is None:
                self.proc._cache_event(e)
        if batch.events:
            await self.store.persist(batch)
        return rejected

    async def _commit(self, room: RoomInfo, rv: RoomVersion, ev: Event, before_ref: SnapshotRef | None,
                      before_state: State | None, rejection: str | None, *, soft_failed: bool = False,
                      deliver: bool = True) -> None:
        type_nid = (await self.store.intern_types([ev.type]))[ev.type]
        sk = ev.state_key
        sk_nid = (await self.store.intern_state_keys([sk]))[sk] if sk is not None else None
        before = before_ref or EMPTY_SNAPSHOT
        batch = PersistBatch(room_nid=room.room_nid, events=[])
        ext_before = dict(room.extremities)
        output: OutputNewEvent | None = None
        after: SnapshotRef = before
        if rejection is None:
            self.proc._cache_event(ev)  # state resolution below may need to load it
        try:
            if rejection is None:
                assert before_state is not None
                after_state = dict(before_state)
                if sk is not None and sk_nid is not None:
                    key = (type_nid, sk_nid)
                    after, _eff = plan_snapshot(before, await self._nid_state(before_state),
                                                {key: (ev.event_id, 0)})
                    after_state[(ev.type, sk)] = (ev.event_id, 0)
                added: list[str] = []
                removed: list[str] = []
                if not soft_failed:
                    await self._advance_current(room, rv, ev, after, after_state, batch, added, removed)
                output = OutputNewEvent(
                    event=_pdu_for_output(ev), room_version=rv.identifier, state_added=added,
                    state_removed=removed, soft_failed=soft_failed or not deliver,
                    last_sent_event_id=room.last_sent_event_id,
                )
                room.last_sent_event_id = ev.event_id
                batch.last_sent_event_id = ev.event_id
            batch.events.append(PersistEvent(
                event_id=ev.event_id, json=encode_canonical_json(ev.pdu, strict=rv.strict_canonicaljson).decode(),
                type_nid=type_nid, state_key_nid=sk_nid, depth=ev.depth, before=before, after=after,
                rejection_reason=rejection, soft_failed=soft_failed,
                output=asdict(output) if output is not None else None,
                state_tuple=(ev.type, sk) if sk is not None and rejection is None and not soft_failed else None,
            ))
            await self.proc._persist(room, batch, ext_before)
        except BaseException:
            self.proc.forget_room(room.room_id)
            self.proc._events.pop(ev.event_id, None)
            raise

    async def _advance_current(self, room: RoomInfo, rv: RoomVersion, ev: Event, after: SnapshotRef,
                               after_state: State, batch: PersistBatch, added: list[str],
                               removed: list[str]) -> None:
        """Forward extremities and current state after accepting `ev`.

        Current state = the resolution of the states after every forward extremity (as
        other servers compute it, so it does not depend on the order events arrived in);
        just the state after `ev` when it descends from every extremity."""
        prevs = set(ev.prev_event_ids)
        child_of_all = set(room.extremities) <= prevs
        for pid in ev.prev_event_ids:
            room.extremities.pop(pid, None)
        others = [e for e in room.extremities if e != ev.event_id]
        room.extremities[ev.event_id] = (0, ev.depth)
        new_state = after_state
        if not child_of_all:
            try:
                states = [after_state]
                rows = await self.store.get_event_rows(others)
                if len(rows) == len(others) and all(r.after_snapshot_nid for r in rows):
                    states += [await self.snapshot_state(r.after_snapshot_nid) for r in rows]
                else:  # (cannot happen: extremities are stored events with state) the current state stands in
                    states.append(dict(room.state))
                new_state = await self._resolve(rv, states)
            except RejectedError as e:  # malformed state sets: cannot happen with our own snapshots
                log.error("resolving the current state of %s failed: %s", room.room_id, e)
                child_of_all = True
                new_state = after_state
        old_nid = room.nid_state
        new_nid = await self._nid_state(new_state)
        changes: dict[tuple[int, int], tuple[str, int] | None] = {}
        for k, v in new_nid.items():
            old = old_nid.get(k)
            if old is None or old[0] != v[0]:
                changes[k] = v
        for k in old_nid:
            if k not in new_nid:
                changes[k] = None
        if not changes:
            return
        if child_of_all:
            snap = after  # exactly the state after the event
        else:
            snap, _eff = plan_snapshot(room.snapshot, old_nid, changes)
        names = await self.store.state_names(changes)
        for k, v in changes.items():
            name = names[k]
            old = old_nid.get(k)
            if old is not None:
                removed.append(old[0])
            if v is None:
                room.nid_state.pop(k, None)
                room.state.pop(name, None)
                batch.state_changes[k] = None
                continue
            added.append(v[0])
            room.nid_state[k] = v
            room.state[name] = v
            batch.state_changes[k] = v[1] if v[1] else v[0]
            if name[0] == "m.room.member":
                sev = ev if v[0] == ev.event_id else await self.proc._event(v[0])
                if sev is not None and isinstance(sev.membership, str):
                    batch.membership_changes[name[1]] = (sev.membership, v[1] if v[1] else v[0])
        room.snapshot = snap

    # ---- outbound join: the room as the resident server gave it -------------------------------
    async def join_remote_room(self, room_id: str, room_version: str, join_pdu: dict[str, Any],
                               state: list[Any], auth_chain: list[Any]) -> str:
        try:
            rv = get_room_version(room_version)
        except UnsupportedRoomVersion:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"unsupported room version {room_version!r}") \
                from None
        try:
            join = self._parse(join_pdu, rv, room_id)
        except NotStoredError as e:
            raise bad_json(f"bad join event: {e}") from None
        if join.type != "m.room.member" or join.membership != "join" or join.state_key != join.sender:
            raise bad_json("not a join event")
        room = await self.proc.room(room_id)
        if room is not None and CREATE_KEY in room.state:
            # Already in the room (e.g. a retry): the join goes in like any PDU.
            out = await self.process(room, rv, join.origin, join, fetch_missing=False)
            if out not in ("accepted", "soft_failed"):
                raise forbidden(f"join rejected: {out}")
            return join.event_id
        # Parse everything; outliers are stored in auth order (by depth, then auth deps).
        outliers: dict[str, Event] = {}
        for p in [*auth_chain, *state]:
            try:
                e = self._parse(p, rv, room_id)
            except NotStoredError as err:
                log.info("dropping an event of the join response: %s", err)
                continue
            outliers[e.event_id] = e
        create = next((e for e in outliers.values() if e.type == "m.room.create" and e.state_key == ""), None)
        if create is None:
            raise bad_json("the join response has no create event")
        if room is None:
            batch = PersistBatch(room_nid=0, events=[], new_room=NewRoomRow(
                room_id, rv.identifier, create.sender, self.proc.clock(), "private"))
            result = await self.store.persist(batch)
            room = await self.store.load_room(room_id)
            assert room is not None and result.room_nid
            self.proc._cache_room(room)
        await self.store_outliers(room, rv, outliers)
        # The state before the join: the resident server's state, minus what was rejected.
        before_state: State = {}
        state_ids = set()
        for p in state:
            try:
                eid = event_id_of(p, rv)
            except Exception:
                continue
            state_ids.add(eid)
        rows = {r.event_id: r for r in await self.store.get_event_rows(sorted(state_ids))}
        for eid in state_ids:
            e = outliers.get(eid)
            r = rows.get(eid)
            if e is None or r is None or r.rejected or e.state_key is None:
                continue
            before_state[(e.type, e.state_key)] = (eid, r.event_nid)
        if CREATE_KEY not in before_state:
            raise bad_json("the join response's state has no create event")
        # Treat the room as empty so far; the join is checked against that state and
        # becomes the only forward extremity.
        room.extremities.clear()
        out = await self._accept_join(room, rv, join, before_state)
        if out != "accepted":
            raise forbidden(f"join rejected: {out}")
        return join.event_id

    @staticmethod
    def _auth_order(events: dict[str, Event]) -> list[Event]:
        """Events so that each comes after the auth events it cites (among `events`)."""
        order: list[Event] = []
        done: set[str] = set()
        visiting: set[str] = set()

        def deps(e: Event) -> Iterator[Event]:
            return iter([events[a] for a in e.full_auth_event_ids if a in events])

        for root in sorted(events.values(), key=lambda x: (x.depth, x.event_id)):
            if root.event_id in done:
                continue
            visiting.add(root.event_id)
            stack: list[tuple[Event, Iterator[Event]]] = [(root, deps(root))]
            while stack:  # iterative post-order DFS (a hostile chain may be long)
                cur, it = stack[-1]
                nxt = next((d for d in it if d.event_id not in done and d.event_id not in visiting), None)
                if nxt is None:
                    stack.pop()
                    visiting.discard(cur.event_id)
                    done.add(cur.event_id)
                    order.append(cur)
                else:
                    visiting.add(nxt.event_id)
                    stack.append((nxt, deps(nxt)))
        return order

    async def _outlier_row(self, rv: RoomVersion, ev: Event, rejection: str | None) -> PersistEvent:
        """An event stored without state (before = after = 0: "state unknown")."""
        type_nid = (await self.store.intern_types([ev.type]))[ev.type]
        sk = ev.state_key
        sk_nid = (await self.store.intern_state_keys([sk]))[sk] if sk is not None else None
        return PersistEvent(
            event_id=ev.event_id, json=encode_canonical_json(ev.pdu, strict=rv.strict_canonicaljson).decode(),
            type_nid=type_nid, state_key_nid=sk_nid, depth=ev.depth, before=EMPTY_SNAPSHOT,
            after=EMPTY_SNAPSHOT, rejection_reason=rejection,
        )

    async def _accept_join(self, room: RoomInfo, rv: RoomVersion, join: Event, before_state: State) -> str:
        if await self.store.get_event_row(join.event_id) is not None:
            return "accepted"
        auth_rows = {r.event_id: r for r in await self.store.get_event_rows(list(join.full_auth_event_ids))}
        missing = [a for a in join.full_auth_event_ids if a not in auth_rows]
        if missing:
            return f"missing auth events: {', '.join(missing[:5])}"
        auth_events = [Event(r.pdu, get_room_version(r.room_version), r.event_id) for r in auth_rows.values()]
        try:
            check_event_auth(join, auth_events, rejected_event_ids={r.event_id for r in auth_rows.values()
                                                                     if r.rejected})
            check_auth_rules(join, await self._auth_state(join, before_state))
        except AuthError as e:
            return e.reason
        before_ref = await self._snapshot_for(room, before_state, None)
        # The current state before the join is the resident's state: current state is
        # replaced wholesale (child of all extremities, and there are none).
        await self._commit(room, rv, join, before_ref, before_state, None)
        return "accepted"

    # ---- inbound invite ------------------------------------------------------------------------
    async def store_invite(self, room_version: str, invite_pdu: dict[str, Any],
                           invite_room_state: list[Any], allowed: tuple[str, ...] = ("invite",)) -> str:
        """An invite of our user (or, with `allowed`, our user's leave/knock done through a
        remote server) for a room we may not be in: kept as an outlier and published."""
        try:
            rv = get_room_version(room_version)
        except UnsupportedRoomVersion:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", f"unsupported room version {room_version!r}",
                              room_version=room_version) from None
        try:
            check_pdu_format(invite_pdu, rv)
            eid = event_id_of(invite_pdu, rv)
        except (EventFormatError, NotStoredError) as e:
            raise bad_json(f"bad invite event: {e}") from None
        pdu = stored_form(invite_pdu, rv)
        stripped = [s for s in invite_room_state if isinstance(s, dict)][:50]
        if stripped:
            unsigned = dict(invite_pdu.get("unsigned") or {}) if isinstance(invite_pdu.get("unsigned"), dict) else {}
            unsigned[f"{invite_pdu.get('content', {}).get('membership')}_room_state"] = stripped
            pdu["unsigned"] = unsigned
        ev = Event(pdu, rv, eid)
        if ev.type != "m.room.member" or ev.membership not in allowed or not ev.state_key:
            raise bad_json(f"not a membership event of kind {'/'.join(allowed)}")
        room_id = ev.room_id
        room = await self.proc.room(room_id)
        if room is not None and CREATE_KEY in room.state:
            # A room we are in: the invite is a PDU like any other.
            out = await self.process(room, rv, ev.origin, ev, fetch_missing=False)
            if out not in ("accepted", "soft_failed"):
                raise forbidden(f"invite rejected: {out}")
            return eid
        if room is None:
            await self.store.persist(PersistBatch(room_nid=0, events=[], new_room=NewRoomRow(
                room_id, rv.identifier, ev.sender, self.proc.clock(), "private")))
            room = await self.store.load_room(room_id)
            if room is None:
                raise not_found(f"room {room_id} could not be created")
            self.proc._cache_room(room)
        if await self.store.get_event_row(eid) is not None:
            return eid
        type_nid = (await self.store.intern_types([ev.type]))[ev.type]
        sk_nid = (await self.store.intern_state_keys([ev.state_key]))[ev.state_key]
        output = OutputNewEvent(event=_pdu_for_output(ev), room_version=rv.identifier, state_added=[eid],
                                state_removed=[], last_sent_event_id=room.last_sent_event_id)
        batch = PersistBatch(room_nid=room.room_nid, events=[PersistEvent(
            event_id=eid, json=encode_canonical_json(pdu, strict=rv.strict_canonicaljson).decode(),
            type_nid=type_nid, state_key_nid=sk_nid, depth=ev.depth, before=EMPTY_SNAPSHOT,
            after=EMPTY_SNAPSHOT, output=asdict(output),
        )], membership_changes={ev.state_key: (str(ev.membership), eid)}, last_sent_event_id=eid)
        result = await self.store.persist(batch)
        room.last_sent_event_id = eid
        if self.proc.on_committed is not None and result.outbox:
            self.proc.on_committed(result.outbox)
        return eid


def _pdu_for_output(ev: Event) -> dict[str, Any]:
    out = dict(ev.pdu)
    out["event_id"] = ev.event_id
    out["room_id"] = ev.room_id
    return out
