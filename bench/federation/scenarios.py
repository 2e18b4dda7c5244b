"""The three federation workloads. Each returns a plain dict of figures (JSON-ready);
failures of a check are listed under `errors` rather than raised, so a partial run still
reports what it measured."""
from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.federation.axon_proc import vm_hwm_mb, vm_rss_mb
from bench.federation.remote import FakeRemote, ResidentRoom, now_ms
from bench.hs.client import CS, BenchHttpError, User, new_session, register
from bench.hs.stats import percentile
from libs.events.builder import build_event
from libs.events.event import Event
from libs.events.room_versions import get_room_version
from services.federationapi.perform import federation_form

PASSWORD = "bench-password-1"


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _room_filter(room_id: str, limit: int = 100) -> str:
    return json.dumps({"room": {"rooms": [room_id], "timeline": {"limit": limit}, "account_data": {"not_types": ["*"]},
                                "ephemeral": {"not_types": ["*"]}},
                       "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}, separators=(",", ":"))


class SyncCollector:
    """Long-polls a user's /sync for one room and notes when each timeline event first shows."""

    def __init__(self, user: User, room_id: str, since: str) -> None:
        self.user, self.room_id, self.since = user, room_id, since
        self.seen: dict[str, float] = {}
        self.limited = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    async def _run(self) -> None:
        flt = _room_filter(self.room_id)
        while not self._stop:
            doc = await self.user.sync(since=self.since, timeout_ms=2000, flt=flt)
            t = time.monotonic()
            room = ((doc.get("rooms") or {}).get("join") or {}).get(self.room_id) or {}
            tl = room.get("timeline") or {}
            if tl.get("limited"):
                self.limited += 1
            for ev in tl.get("events") or []:
                self.seen.setdefault(ev.get("event_id"), t)
            self.since = doc["next_batch"]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait_for(self, ids: set[str], deadline_s: float) -> bool:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if ids <= self.seen.keys():
                return True
            if self._task is not None and self._task.done():
                self._task.result()  # surfaces the error
            await asyncio.sleep(0.05)
        return ids <= self.seen.keys()

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the long-poll is abandoned
                pass


async def _messages_ids(user: User, room_id: str, want: set[str]) -> set[str]:
    """Walks /messages backwards collecting event IDs (a fallback when /sync timelines were limited)."""
    got: set[str] = set()
    frm: str | None = None
    for _ in range(200):
        params = {"dir": "b", "limit": "500"}
        if frm:
            params["from"] = frm
        doc = await user.call("GET", f"{CS}/rooms/{_q(room_id)}/messages", params=params)
        for ev in doc.get("chunk") or []:
            got.add(ev.get("event_id"))
        if want <= got or not doc.get("chunk") or not doc.get("end"):
            break
        frm = doc["end"]
    return got & want


# ---------------------------------------------------------------------------- 1. inbound
async def inbound(base: str, axon_name: str, workdir: Path, *, txns: int, per_txn: int,
                  state_every: int, label: str) -> dict[str, Any]:
    """A fake remote joins an Axon room, then sends `txns` transactions of `per_txn` PDUs
    (every `state_every`-th a state event when > 0); PDUs/s accepted, and until /sync has them all."""
    errors: list[str] = []
    remote = FakeRemote(workdir, label=f"in{label[:5]}")
    await remote.start()
    http = new_session()
    try:
        alice = await register(http, base, f"alice-{secrets.token_hex(4)}", PASSWORD)
        ruser = f"@sender:{remote.name}"
        room = await alice.create_room(preset="public_chat", power_level_content_override={
            "users": {alice.user_id: 100, ruser: 100}})
        await remote.join(axon_name, room, ruser)
        flt = _room_filter(room)
        since = (await alice.sync(timeout_ms=0, flt=flt))["next_batch"]
        # Built (hashed, signed) before the clock starts: the bench times Axon, not the fake.
        batches: list[list[Event]] = []
        n = 0
        for _ in range(txns):
            batch = []
            for _ in range(per_txn):
                n += 1
                if state_every and n % state_every == 0:
                    batch.append(remote.build(room, ruser, "org.axon.bench.state", {"n": n}, state_key=f"k{n}"))
                else:
                    batch.append(remote.build(room, ruser, "m.room.message", {"msgtype": "m.text", "body": f"m{n}"}))
            batches.append(batch)
        ids = {e.event_id for b in batches for e in b}
        collector = SyncCollector(alice, room, since)
        collector.start()
        lat: list[float] = []
        rejected = 0
        t0 = time.monotonic()
        for i, batch in enumerate(batches):
            t = time.monotonic()
            doc = await remote.send_transaction(axon_name, f"{label}-{i}-{secrets.token_hex(3)}", batch)
            lat.append(time.monotonic() - t)
            results = doc.get("pdus") or {}
            for e in batch:
                r = results.get(e.event_id)
                if r is None or (isinstance(r, dict) and r.get("error")):
                    rejected += 1
                    if len(errors) < 5:
                        errors.append(f"{e.event_id}: {r}")
        accept_s = time.monotonic() - t0
        all_seen = await collector.wait_for(ids, 120.0)
        await collector.stop()
        seen_ids = ids & collector.seen.keys()
        sync_s = (max(collector.seen[i] for i in seen_ids) - t0) if all_seen else None
        via_messages = None
        if not all_seen:
            via_messages = len(await _messages_ids(alice, room, ids))
            errors.append(f"/sync showed {len(seen_ids)}/{len(ids)} (limited timelines: {collector.limited}); "
                          f"/messages has {via_messages}")
        if rejected:
            errors.append(f"{rejected} PDUs not accepted")
        total = len(ids)
        return {
            "pdus": total, "transactions": txns, "per_txn": per_txn,
            "state_events": sum(1 for b in batches for e in b if e.pdu.get("state_key") is not None),
            "accepted": total - rejected, "accept_s": round(accept_s, 3),
            "accepted_pdus_per_s": round((total - rejected) / accept_s, 1),
            "txn_p50_ms": round(percentile(lat, 50) * 1000, 1), "txn_p99_ms": round(percentile(lat, 99) * 1000, 1),
            "sync_saw": len(seen_ids), "sync_all_s": None if sync_s is None else round(sync_s, 3),
            "sync_pdus_per_s": None if sync_s is None else round(total / sync_s, 1),
            "sync_limited_responses": collector.limited, "messages_saw": via_messages, "errors": errors,
        }
    finally:
        await http.close()
        await remote.stop()


# ---------------------------------------------------------------------------- 2. outbound fan-out
async def fanout(base: str, axon_name: str, workdir: Path, *, destinations: int, messages: int,
                 senders: int = 4) -> dict[str, Any]:
    """`destinations` fake servers each join one user to an Axon room; a local user sends
    `messages` messages; PDUs delivered/s over all destinations, each exactly once."""
    errors: list[str] = []
    remotes = [FakeRemote(workdir, label=f"out{i}") for i in range(destinations)]
    for r in remotes:
        await r.start()
    http = new_session()
    try:
        alice = await register(http, base, f"fan-{secrets.token_hex(4)}", PASSWORD)
        room = await alice.create_room(preset="public_chat")
        for r in remotes:
            await r.join(axon_name, room, f"@rcv:{r.name}")
        # Let the joins' own fan-out settle, then count only the timed messages.
        await asyncio.sleep(2.0)
        for r in remotes:
            r.reset_received()
        sent: list[str] = []
        sent_at: dict[str, float] = {}   # event ID -> when its PUT answered
        send_lat: list[float] = []

        async def sender(k: int) -> None:
            for j in range(k, messages, senders):
                t = time.monotonic()
                eid = await alice.send_text(room, f"fan {j}")
                sent_at[eid] = time.monotonic()
                sent.append(eid)
                send_lat.append(sent_at[eid] - t)

        t0 = time.monotonic()
        await asyncio.gather(*(sender(k) for k in range(senders)))
        send_s = time.monotonic() - t0
        want = set(sent)
        end = time.monotonic() + 180.0
        while time.monotonic() < end and not all(want <= r.first_seen.keys() for r in remotes):
            await asyncio.sleep(0.05)
        complete = [want <= r.first_seen.keys() for r in remotes]
        per_dest_s = [max((r.first_seen[e] for e in want if e in r.first_seen), default=t0) - t0 for r in remotes]
        delivered = sum(len(want & r.first_seen.keys()) for r in remotes)
        dupes = sum(max(0, r.received[e] - 1) for r in remotes for e in want)
        extra = sum(len(set(r.received) - want) for r in remotes)
        if not all(complete):
            errors.append(f"{complete.count(False)} destinations missing PDUs ({delivered}/{len(want) * len(remotes)})")
        if dupes:
            errors.append(f"{dupes} duplicate deliveries")
        all_s = max(per_dest_s) if per_dest_s else 0.0
        # Per PDU and destination: from the local PUT's answer to the destination's /send.
        lag = [r.first_seen[e] - sent_at[e] for r in remotes for e in want if e in r.first_seen]
        return {
            "destinations": destinations, "messages": messages, "senders": senders,
            "send_s": round(send_s, 3), "sends_per_s": round(messages / send_s, 1),
            "send_p50_ms": round(percentile(send_lat, 50) * 1000, 1),
            "delivered": delivered, "expected": len(want) * len(remotes), "duplicates": dupes,
            "other_pdus": extra, "all_delivered_s": round(all_s, 3),
            "delivered_pdus_per_s": round(delivered / all_s, 1) if all_s > 0 else None,
            "delivery_p50_ms": round(percentile(lag, 50) * 1000, 1) if lag else None,
            "delivery_p99_ms": round(percentile(lag, 99) * 1000, 1) if lag else None,
            "last_delivery_after_last_send_s": round(all_s - send_s, 3),
            "per_destination_s_min_max": [round(min(per_dest_s), 3), round(max(per_dest_s), 3)],
            "transactions_received": sum(sum(r.txns.values()) for r in remotes),
            "errors": errors,
        }
    finally:
        await http.close()
        for r in remotes:
            await r.stop()


# ---------------------------------------------------------------------------- 3. large remote join
def build_resident_room(remote: FakeRemote, members: int, room_version: str = "11") -> ResidentRoom:
    """A room on `remote` with `members` joined users (all of the remote), correctly
    built and signed: create, creator's join, power levels, join rules (public),
    history visibility, then one join per member, chained by prev_events."""
    rv = get_room_version(room_version)
    name, key = remote.name, remote.key
    room_id = f"!bench{secrets.token_hex(6)}:{name}"
    creator = f"@creator:{name}"
    ts = now_ms()
    ids: dict[tuple[str, str], str] = {}
    events: list[Event] = []
    depth = 0

    def add(etype: str, sender: str, content: dict[str, Any], state_key: str, auth: list[tuple[str, str]]) -> Event:
        nonlocal depth
        depth += 1
        ev = build_event(rv, type=etype, sender=sender, room_id=room_id, content=content,
                         prev_events=[events[-1].event_id] if events else [],
                         auth_events=[ids[k] for k in auth if k in ids], depth=depth, origin_server_ts=ts + depth,
                         server_name=name, signing_key=key, state_key=state_key)
        events.append(ev)
        ids[(etype, state_key)] = ev.event_id
        return ev

    c, pl, jr = ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")
    cm = ("m.room.member", creator)
    add("m.room.create", creator, {"room_version": room_version, "creator": creator}, "", [])
    add("m.room.member", creator, {"membership": "join"}, creator, [c])
    add("m.room.power_levels", creator, {"users": {creator: 100}}, "", [c, cm])
    add("m.room.join_rules", creator, {"join_rule": "public"}, "", [c, pl, cm])
    add("m.room.history_visibility", creator, {"history_visibility": "shared"}, "", [c, pl, cm])
    auth_chain = [federation_form(e.pdu, rv) for e in events[:4]]
    for i in range(members):
        u = f"@u{i}:{name}"
        add("m.room.member", u, {"membership": "join"}, u, [c, pl, jr])
    state = [federation_form(e.pdu, rv) for e in events]
    return ResidentRoom(room_id, rv, state, auth_chain, ids, events[-1].event_id, depth)


async def large_join(base: str, pid: int, resident: FakeRemote, room: ResidentRoom) -> dict[str, Any]:
    """A local user of the Axon at `base` (process `pid`) joins the resident's room by ID
    with `server_name=`; time to the /join answer, Axon's peak RSS, member count after."""
    errors: list[str] = []
    http = new_session(timeout_s=600)
    try:
        bob = await register(http, base, f"joiner-{secrets.token_hex(4)}", PASSWORD)
        rss_before = vm_rss_mb(pid)
        hwm_before = vm_hwm_mb(pid)
        t0 = time.monotonic()
        doc = await bob.call("POST", f"{CS}/join/{_q(room.room_id)}", {},
                             params={"server_name": resident.name}, timeout_s=600)
        join_s = time.monotonic() - t0
        if doc.get("room_id") != room.room_id:
            errors.append(f"join answered {doc}")
        hwm_after_join = vm_hwm_mb(pid)
        # /joined_members is the syncapi's view: poll until it has projected the join.
        t1 = time.monotonic()
        joined, jm_error = 0, ""
        expected = sum(1 for e in room.state if e["type"] == "m.room.member") + 1
        while time.monotonic() - t1 < 300:
            try:
                jm = await bob.call("GET", f"{CS}/rooms/{_q(room.room_id)}/joined_members", timeout_s=600)
                joined = len(jm.get("joined") or {})
                if joined >= expected:
                    break
            except BenchHttpError as e:
                jm_error = str(e)[:200]
            await asyncio.sleep(0.1)
        members_s = time.monotonic() - t1
        if joined != expected:
            errors.append(f"joined_members: {joined}, expected {expected} {jm_error}")
        t2 = time.monotonic()
        await bob.sync(timeout_ms=0, flt=_room_filter(room.room_id, 10))
        sync_s = time.monotonic() - t2
        return {
            "state_events": len(room.state), "members_in_state": expected - 1,
            "join_s": round(join_s, 3), "joined_members_after": joined,
            "joined_members_visible_after_join_s": round(members_s, 3),
            "join_complete_s": round(join_s + members_s, 3), "initial_sync_after_join_s": round(sync_s, 3),
            "rss_before_mb": rss_before and round(rss_before, 1), "peak_rss_before_mb": hwm_before and round(hwm_before, 1),
            "peak_rss_after_join_mb": hwm_after_join and round(hwm_after_join, 1),
            "peak_rss_end_mb": (h := vm_hwm_mb(pid)) and round(h, 1),
            "send_join_answers_served": resident.joins_served, "errors": errors,
        }
    finally:
        await http.close()
