"""Inbound `PUT /_matrix/federation/v1/send/{txnId}`: parse, validate, dedup, hand over.

Per transaction: at most 50 PDUs and 100 EDUs (400 otherwise), answered once per
(origin, txn_id) — a retried transaction gets the stored answer. Per PDU, in the
spec's order: the room must be known (its version decides the format), the format and
size limits (`check_pdu_format`), the signatures of every required server (keys at
`origin_server_ts` for v5+ rooms), then the content hash — a mismatch redacts the event
and goes on. One bad PDU never fails the others; each gets its entry in the answer.
Accepted PDUs go to the `InboundPDUSink`. EDUs are best effort: typing and receipts
from the origin's own users in rooms we know, to-device messages for our users,
device-list updates and presence become the syncapi's records. A room's server ACL
(`m.room.server_acl`) is applied to its PDUs and to typing/receipt EDUs from the origin.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any, Awaitable, Callable, Protocol

from libs.errors import MatrixError, bad_json
from libs.events.event import Event
from libs.events.hashes import compute_event_id
from libs.events.limits import EventFormatError, check_pdu_format
from libs.events.redaction import redact
from libs.events.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version
from libs.events.signing import SignatureError, check_event_hash, verify_event_signatures
from services.syncapi.api import (TOPIC_KEY_CHANGES, TOPIC_RECEIPTS, TOPIC_TO_DEVICE, TOPIC_TYPING,
                                  KeyChangeRecord, ReceiptRecord, ToDeviceRecord, TypingRecord)

from urllib.parse import quote

from services.userapi.api import TOPIC_PRESENCE

from .acl import server_acl_allows
from .api import InboundPDUSink, PDUError
from .keyring import KeyRing
from .storage.store import FederationStore

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
MAX_TYPING_TIMEOUT_MS = 120_000
PRESENCE_STATES = ("online", "offline", "unavailable")
MAX_STATUS_MSG = 1024


class RecordPublisher(Protocol):
    async def publish(self, topic: str, key: str, record: dict[str, Any]) -> None: ...


RoomVersionLookup = Callable[[str], Awaitable[str | None]]
# The content of a room's m.room.server_acl state event (None: the room has none).
AclLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


def _domain(user_id: Any) -> str | None:
    if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
        return None
    return user_id.split(":", 1)[1]


def _now_ms() -> int:
    return int(time.time() * 1000)


class TransactionProcessor:
    def __init__(self, server_name: str, store: FederationStore, keyring: KeyRing, sink: InboundPDUSink,
                 room_version_of: RoomVersionLookup, publisher: RecordPublisher | None = None,
                 clock_ms: Callable[[], int] = _now_ms, *, acl_of: AclLookup | None = None) -> None:
        self.server_name = server_name
        self.acl_of = acl_of
        self.store = store
        self.keyring = keyring
        self.sink = sink
        self.room_version_of = room_version_of
        self.publisher = publisher
        self.clock_ms = clock_ms
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def handle(self, origin: str, txn_id: str, body: Any) -> dict[str, Any]:
        pdus, edus = self._validate(origin, body)
        key = (origin, txn_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                previous = await self.store.get_transaction_response(origin, txn_id)
                if previous is not None:
                    return previous
                response = {"pdus": await self.process_pdus(origin, pdus)}
                await self.process_edus(origin, edus)
                await self.store.store_transaction_response(origin, txn_id, response, self.clock_ms())
                return response
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    @staticmethod
    def _validate(origin: str, body: Any) -> tuple[list[Any], list[Any]]:
        if not isinstance(body, dict):
            raise bad_json("Transaction must be a JSON object")
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise bad_json("pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(400, "M_TOO_LARGE",
                              f"A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
        body_origin = body.get("origin")
        if body_origin is not None and body_origin != origin:
            raise MatrixError(403, "M_FORBIDDEN", "Transaction origin does not match the authenticated origin")
        return pdus, edus

    # ---- PDUs ------------------------------------------------------------------------

    async def check_pdu(self, pdu: Any) -> tuple[str | None, Event | None, PDUError | None]:
        """(event_id, event to hand over, error). event_id None: cannot be named (dropped)."""
        if not isinstance(pdu, dict):
            return None, None, None
        room_id = pdu.get("room_id")
        version_id = await self.room_version_of(room_id) if isinstance(room_id, str) and room_id else None
        if version_id is None:
            return None, None, None  # unknown room: nothing to name the event by (as other servers do)
        try:
            version: RoomVersion = get_room_version(version_id)
        except UnsupportedRoomVersion:
            return None, None, None
        try:
            event_id = compute_event_id(pdu, version)  # v1/v2: its own '$' ID, else ValueError
        except Exception:  # malformed beyond hashing (e.g. not canonical-encodable)
            return None, None, None
        try:
            check_pdu_format(pdu, version)
        except EventFormatError as e:
            return event_id, None, PDUError(e.errcode, str(e))
        try:
            keys = await self.keyring.keys_for_event(pdu, version)
            verify_event_signatures(pdu, version, keys)
        except SignatureError as e:
            return event_id, None, PDUError("M_FORBIDDEN", f"signature check failed: {e}")
        if not check_event_hash(pdu, version):
            log.info("event %s has a bad content hash: redacting it", event_id)
            pdu = redact(pdu, version)
        return event_id, Event(pdu, version, event_id=event_id), None

    async def origin_allowed(self, origin: str, room_id: Any) -> bool:
        """The room's server ACL admits `origin` (rooms without an ACL admit everyone)."""
        if self.acl_of is None or not isinstance(room_id, str):
            return True
        try:
            return server_acl_allows(await self.acl_of(room_id), origin)
        except Exception as e:  # the ACL could not be read: refuse rather than bypass it
            log.warning("server ACL of %s unavailable: %s", room_id, e)
            return False

    async def process_pdus(self, origin: str, pdus: list[Any]) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        accepted: list[Event] = []
        acl_ok: dict[str, bool] = {}
        for pdu in pdus:
            try:
                event_id, ev, err = await self.check_pdu(pdu)
            except Exception as e:  # never let one PDU fail the transaction
                log.warning("unexpected failure checking a PDU from %s: %s", origin, e, exc_info=True)
                continue
            if event_id is None or event_id in results:
                continue
            room_id = pdu.get("room_id")
            if err is None and ev is not None and isinstance(room_id, str):
                if room_id not in acl_ok:
                    acl_ok[room_id] = await self.origin_allowed(origin, room_id)
                if not acl_ok[room_id]:
                    err = PDUError("M_FORBIDDEN", f"{origin} is denied by the room's server ACL")
            if err is not None:
                results[event_id] = {"error": f"{err.errcode}: {err.error}"}
            elif ev is not None:
                results[event_id] = {}
                accepted.append(ev)
        if accepted:
            try:
                outcome = await self.sink.receive_pdus(origin, accepted)
            except Exception as e:
                log.warning("the PDU sink failed for %s: %s", origin, e, exc_info=True)
                outcome = {ev.event_id: PDUError("M_UNKNOWN", "internal error") for ev in accepted}
            for ev in accepted:
                err = outcome.get(ev.event_id)
                if err is not None:
                    results[ev.event_id] = {"error": f"{err.errcode}: {err.error}"}
        return results

    # ---- EDUs ------------------------------------------------------------------------

    async def process_edus(self, origin: str, edus: list[Any]) -> int:
        """Publish what we understand; returns the number of records produced."""
        produced = 0
        for edu in edus:
            if not isinstance(edu, dict) or not isinstance(edu.get("content"), dict):
                continue
            try:
                records = await self.parse_edu(origin, str(edu.get("edu_type")), edu["content"])
            except Exception as e:
                log.info("ignoring a bad %s EDU from %s: %s", edu.get("edu_type"), origin, e)
                continue
            if self.publisher is None:
                continue
            for topic, key, rec in records:
                await self.publisher.publish(topic, key, rec)
                produced += 1
        return produced

    async def _room_known(self, room_id: Any) -> bool:
        return isinstance(room_id, str) and bool(room_id) and await self.room_version_of(room_id) is not None

    async def parse_edu(self, origin: str, edu_type: str, content: dict[str, Any]
                        ) -> list[tuple[str, str, dict[str, Any]]]:
        out: list[tuple[str, str, dict[str, Any]]] = []
        if edu_type == "m.typing":
            room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
            if _domain(user_id) == origin and isinstance(typing, bool) and await self._room_known(room_id) \
                    and await self.origin_allowed(origin, room_id):
                timeout = content.get("timeout", 30000)
                if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
                    timeout = 30000
                rec = TypingRecord(room_id=room_id, user_id=user_id, typing=typing,
                                   timeout_ms=min(timeout, MAX_TYPING_TIMEOUT_MS))
                out.append((TOPIC_TYPING, room_id, asdict(rec)))
        elif edu_type == "m.receipt":
            for room_id, by_type in list(content.items())[:100]:
                if not isinstance(by_type, dict) or not await self._room_known(room_id) \
                        or not await self.origin_allowed(origin, room_id):
                    continue
                for rtype, by_user in by_type.items():
                    if rtype != "m.read" or not isinstance(by_user, dict):
                        continue  # private receipts never cross servers
                    for user_id, receipt in list(by_user.items())[:1000]:
                        if _domain(user_id) != origin or not isinstance(receipt, dict):
                            continue
                        ids = receipt.get("event_ids")
                        data = receipt.get("data") if isinstance(receipt.get("data"), dict) else {}
                        ts = data.get("ts")
                        ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else self.clock_ms()
                        thread = data.get("thread_id")
                        if not isinstance(ids, list) or not ids or not isinstance(ids[0], str):
                            continue
                        rec = ReceiptRecord(room_id=room_id, user_id=user_id, receipt_type=rtype,
                                            event_id=ids[0], ts=ts,
                                            thread_id=thread if isinstance(thread, str) else None)
                        out.append((TOPIC_RECEIPTS, room_id, asdict(rec)))
        elif edu_type == "m.direct_to_device":
            sender, typ, msg_id = content.get("sender"), content.get("type"), content.get("message_id")
            messages = content.get("messages")
            if _domain(sender) != origin or not isinstance(typ, str) or not isinstance(msg_id, str) \
                    or not isinstance(messages, dict):
                return out
            for user_id, by_device in list(messages.items())[:1000]:
                if _domain(user_id) != self.server_name or not isinstance(by_device, dict):
                    continue
                for device_id, body in by_device.items():
                    if isinstance(device_id, str) and isinstance(body, dict):
                        rec = ToDeviceRecord(sender=sender, type=typ, user_id=user_id, device_id=device_id,
                                             content=body, message_id=msg_id)
                        out.append((TOPIC_TO_DEVICE, user_id, asdict(rec)))
        elif edu_type in ("m.device_list_update", "m.signing_key_update"):
            user_id = content.get("user_id")
            if _domain(user_id) == origin:
                out.append((TOPIC_KEY_CHANGES, user_id, asdict(KeyChangeRecord(user_id=user_id))))
        elif edu_type == "m.presence":
            out += self._presence_records(origin, content)
        return out

    def _presence_records(self, origin: str, content: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        """`m.presence` pushes of the origin's own users, as the userapi's presence records
        (`last_active_ts` from `last_active_ago`)."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        push = content.get("push")
        now = self.clock_ms()
        for item in push[:1000] if isinstance(push, list) else []:
            if not isinstance(item, dict):
                continue
            user_id, presence = item.get("user_id"), item.get("presence")
            if _domain(user_id) != origin or presence not in PRESENCE_STATES:
                continue
            ago = item.get("last_active_ago")
            ago = ago if isinstance(ago, int) and not isinstance(ago, bool) and ago >= 0 else 0
            msg = item.get("status_msg")
            msg = msg[:MAX_STATUS_MSG] if isinstance(msg, str) else None
            out.append((TOPIC_PRESENCE, user_id, {"user_id": user_id, "presence": presence,
                                                  "status_msg": msg, "last_active_ts": max(0, now - ago)}))
        return out


# ---- the roomserver side ----------------------------------------------------------------

class FederatedInputAPI(Protocol):
    """The part of `RoomserverAPI` the sink needs."""

    async def receive_federated_pdus(self, origin: str, room_id: str, pdus: list[dict[str, Any]]) -> Any: ...


# The roomserver's result for a PDU it stored as rejected (services/roomserver/federated.py).
REJECTED_PREFIX = "rejected"


class RoomserverPDUSink:
    """`InboundPDUSink` over the roomserver's federated input: the transaction's PDUs
    grouped by room, one roomserver call per room (its worker processes them in
    order); a failing room never fails the others. PDUs stored as rejected (auth rules)
    count as processed: no error in the /send answer."""

    def __init__(self, roomserver: FederatedInputAPI) -> None:
        self.roomserver = roomserver

    async def receive_pdus(self, origin: str, pdus: list[Event]) -> dict[str, PDUError | None]:
        by_room: dict[str, list[Event]] = {}
        for ev in pdus:
            by_room.setdefault(ev.room_id, []).append(ev)
        out: dict[str, PDUError | None] = {}
        for room_id, evs in by_room.items():
            try:
                res = await self.roomserver.receive_federated_pdus(origin, room_id, [ev.pdu for ev in evs])
                results: dict[str, str | None] = res.results
            except MatrixError as e:
                for ev in evs:
                    out[ev.event_id] = PDUError(e.errcode, e.error)
                continue
            except Exception as e:
                log.warning("federated input for %s failed: %s", room_id, e, exc_info=True)
                for ev in evs:
                    out[ev.event_id] = PDUError("M_UNKNOWN", "internal error")
                continue
            for ev in evs:
                if ev.event_id not in results:
                    out[ev.event_id] = PDUError("M_UNKNOWN", "not processed")
                    continue
                err = results[ev.event_id]
                if err is not None and str(err).startswith(REJECTED_PREFIX):
                    # Processed: stored as rejected (never in any state). The /send answer
                    # names errors of processing only, as Synapse does (a sender reading
                    # an error would retry or give up on a PDU that was handled).
                    log.info("PDU %s from %s rejected: %s", ev.event_id, origin, err)
                    err = None
                out[ev.event_id] = None if err is None else PDUError("M_FORBIDDEN", str(err))
        return out


MAX_AUTH_CHAIN = 1000
MAX_BACKFILL = 100  # events per outbound /backfill


class MissingEventsClient:
    """`MissingEventsFetcher` for the roomserver: `POST /get_missing_events` to the
    origin, each returned PDU checked like a /send PDU (format, signatures, hash).
    `client` and `transactions` are set once the federationapi exists (it is built
    after the roomserver); until then nothing is fetched."""

    def __init__(self) -> None:
        self.client: Any = None
        self.transactions: TransactionProcessor | None = None

    async def get_missing_events(self, origin: str, room_id: str, earliest: list[str], latest: list[str],
                                 limit: int, min_depth: int) -> list[dict[str, Any]]:
        if self.client is None or self.transactions is None:
            return []
        body = await self.client.post_json(
            origin, f"/_matrix/federation/v1/get_missing_events/{quote(room_id, safe='')}",
            {"earliest_events": earliest, "latest_events": latest, "limit": limit, "min_depth": min_depth})
        events = body.get("events") if isinstance(body, dict) else None
        return await self._checked(room_id, events[:limit] if isinstance(events, list) else [])

    async def backfill(self, origin: str, room_id: str, from_event_ids: list[str], limit: int
                       ) -> list[dict[str, Any]]:
        """`GET /backfill/{room_id}?v=...&limit=` at `origin`: the events before (and
        including) `from_event_ids`, each checked like a /send PDU."""
        if self.client is None or self.transactions is None or not from_event_ids:
            return []
        limit = max(1, min(int(limit), MAX_BACKFILL))
        body = await self.client.get_json(
            origin, f"/_matrix/federation/v1/backfill/{quote(room_id, safe='')}",
            {"v": list(from_event_ids), "limit": limit})
        pdus = body.get("pdus") if isinstance(body, dict) else None
        return await self._checked(room_id, pdus[:limit] if isinstance(pdus, list) else [])

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        if self.client is None or self.transactions is None:
            return []
        body = await self.client.get_json(
            origin, f"/_matrix/federation/v1/event_auth/{quote(room_id, safe='')}/{quote(event_id, safe='')}")
        chain = body.get("auth_chain") if isinstance(body, dict) else None
        return await self._checked(room_id, chain[:MAX_AUTH_CHAIN] if isinstance(chain, list) else [])

    async def get_event(self, origin: str, room_id: str, event_id: str) -> dict[str, Any] | None:
        """`GET /event/{event_id}` at `origin`: the PDU if it is of `room_id` and passes
        the /send checks, else None."""
        if self.client is None or self.transactions is None:
            return None
        body = await self.client.get_json(origin, f"/_matrix/federation/v1/event/{quote(event_id, safe='')}")
        pdus = body.get("pdus") if isinstance(body, dict) else None
        got = await self._checked(room_id, pdus[:1] if isinstance(pdus, list) else [])
        return got[0] if got else None

    async def get_state_ids(self, origin: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        """`GET /state_ids/{room_id}?event_id=` at `origin`: (IDs of the room's state at
        the event, i.e. before it, and of that state's auth chain)."""
        if self.client is None or self.transactions is None:
            return [], []
        body = await self.client.get_json(
            origin, f"/_matrix/federation/v1/state_ids/{quote(room_id, safe='')}", {"event_id": event_id})
        if not isinstance(body, dict):
            return [], []

        def ids(v: Any) -> list[str]:
            return [e for e in v[:MAX_AUTH_CHAIN] if isinstance(e, str)] if isinstance(v, list) else []
        return ids(body.get("pdu_ids")), ids(body.get("auth_chain_ids"))

    async def _checked(self, room_id: str, pdus: list[Any]) -> list[dict[str, Any]]:
        """The PDUs of `room_id` that pass the /send checks (bad hash: redacted)."""
        assert self.transactions is not None
        out: list[dict[str, Any]] = []
        for p in pdus:
            if not isinstance(p, dict) or (p.get("room_id") != room_id and p.get("type") != "m.room.create"):
                continue
            _eid, ev, err = await self.transactions.check_pdu(p)
            if ev is not None and err is None and ev.room_id == room_id:
                out.append(ev.pdu)
        return out
