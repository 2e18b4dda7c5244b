"""The roomserver's read side of federation: PDUs, state at an event, auth chains,
missing events, backfill, and the make_join/leave/knock templates.

Read-only over the roomserver's tables (any replica may answer). Events are
returned in federation format: as stored, without `unsigned` (invites keep none
either: stripped state is ours, not the PDU's) and, for v3+ rooms, without
`event_id`. Rejected events are never served, outliers (state unknown) cannot
be asked for state.
"""
from __future__ import annotations

from typing import Any

from libs.errors import MatrixError, bad_json, forbidden, incompatible_room_version, not_found
from libs.events.auth import AUTHORISING_USER, AuthError, auth_types_for_event, check_auth_rules, \
    get_named_level, get_user_power_level
from libs.events.event import Event
from libs.events.hashes import compute_reference_hash
from libs.events.limits import EventFormatError, check_pdu_format
from libs.events.room_versions import EventFormat, get_room_version
from libs.events.signing import SigningKey, sign_event
from libs.events.unpadded_base64 import encode_base64

from services.roomserver.api import StateAndAuthChain
from services.roomserver.federated import event_id_of, NotStoredError
from services.roomserver.input import MAX_PREV_EVENTS, now_ms
from services.roomserver.storage.store import EventRow, RoomserverStore

CREATE_KEY = ("m.room.create", "")
MAX_AUTH_CHAIN = 10_000
MAX_WALK = 1000


def federation_form(row: EventRow) -> dict[str, Any]:
    pdu = {k: v for k, v in row.pdu.items() if k != "unsigned"}
    if get_room_version(row.room_version).event_format is not EventFormat.V1:
        pdu.pop("event_id", None)
    return pdu


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class FederationReads:
    def __init__(self, store: RoomserverStore, server_name: str, signing_key: SigningKey) -> None:
        self.store = store
        self.server_name = server_name
        self.signing_key = signing_key

    async def get_pdu(self, event_id: str) -> tuple[str, dict[str, Any]] | None:
        row = await self.store.get_event_row(event_id)
        if row is None or row.rejected:
            return None
        return row.room_version, federation_form(row)

    async def _state_before_rows(self, room_id: str, event_id: str) -> tuple[EventRow, list[EventRow]]:
        row = await self.store.get_event_row(event_id)
        if row is None or row.room_id != room_id or row.rejected:
            raise not_found(f"unknown event {event_id} in {room_id}")
        if row.after_snapshot_nid == 0:
            raise not_found(f"the state at {event_id} is not known here")
        nids = await self.store.load_snapshot(row.before_snapshot_nid)
        return row, await self.store.get_event_rows_by_nid(list(nids.values()))

    async def auth_chain_rows(self, start_ids: list[str]) -> list[EventRow]:
        """Every event reachable over auth_events from `start_ids` (not themselves
        unless reached), one query per generation."""
        seen: dict[str, EventRow] = {}
        starts = await self.store.get_event_rows(list(dict.fromkeys(start_ids)))
        frontier = {a for r in starts for a in Event(r.pdu, get_room_version(r.room_version),
                                                     r.event_id).full_auth_event_ids}
        while frontier and len(seen) < MAX_AUTH_CHAIN:
            rows = await self.store.get_event_rows(sorted(frontier))
            nxt: set[str] = set()
            for r in rows:
                seen[r.event_id] = r
                ev = Event(r.pdu, get_room_version(r.room_version), r.event_id)
                nxt.update(a for a in ev.full_auth_event_ids if a not in seen)
            frontier = nxt - set(seen)
        return sorted(seen.values(), key=lambda r: (r.pdu.get("depth", 0), r.event_nid))

    async def get_state_and_auth_chain(self, room_id: str, event_id: str) -> StateAndAuthChain:
        _row, state = await self._state_before_rows(room_id, event_id)
        chain = await self.auth_chain_rows([r.event_id for r in state])
        return StateAndAuthChain(state=[federation_form(r) for r in state],
                                 auth_chain=[federation_form(r) for r in chain])

    async def get_state_ids_and_auth_chain_ids(self, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        _row, state = await self._state_before_rows(room_id, event_id)
        chain = await self.auth_chain_rows([r.event_id for r in state])
        return [r.event_id for r in state], [r.event_id for r in chain]

    async def get_auth_chain(self, event_ids: list[str]) -> list[dict[str, Any]]:
        return [federation_form(r) for r in await self.auth_chain_rows(event_ids)]

    async def get_missing_events(self, room_id: str, earliest: list[str], latest: list[str], limit: int,
                                 min_depth: int) -> list[dict[str, Any]]:
        """Walk prev_events back from `latest` (excluded), never past `earliest`,
        events deeper than `min_depth`; the oldest first (as the spec's example)."""
        limit = max(0, min(limit, 100))
        stop = set(earliest) | set(latest)
        found: dict[str, EventRow] = {}
        starts = await self.store.get_event_rows(list(dict.fromkeys(latest)))
        frontier = {p for r in starts if r.room_id == room_id
                    for p in Event(r.pdu, get_room_version(r.room_version), r.event_id).prev_event_ids} - stop
        while frontier and len(found) < limit:
            rows = await self.store.get_event_rows(sorted(frontier))
            nxt: set[str] = set()
            for r in sorted(rows, key=lambda r: -r.event_nid):
                if r.room_id != room_id or r.rejected or int(r.pdu.get("depth", 0)) < min_depth:
                    continue
                if len(found) >= limit:
                    break
                found[r.event_id] = r
                ev = Event(r.pdu, get_room_version(r.room_version), r.event_id)
                nxt.update(p for p in ev.prev_event_ids if p not in stop and p not in found)
            frontier = nxt
        return [federation_form(r) for r in sorted(found.values(), key=lambda r: (r.pdu.get("depth", 0),
                                                                                 r.event_nid))]

    async def backfill(self, room_id: str, from_event_ids: list[str], limit: int) -> list[dict[str, Any]]:
        """`from_event_ids` and their ancestors over prev_events, newest first, at most `limit`."""
        limit = max(0, min(limit, 100))
        found: dict[str, EventRow] = {}
        frontier = set(from_event_ids)
        while frontier and len(found) < limit:
            rows = await self.store.get_event_rows(sorted(frontier))
            nxt: set[str] = set()
            for r in sorted(rows, key=lambda r: (-int(r.pdu.get("depth", 0)), -r.event_nid)):
                if r.room_id != room_id or r.rejected or len(found) >= limit:
                    continue
                found[r.event_id] = r
                ev = Event(r.pdu, get_room_version(r.room_version), r.event_id)
                nxt.update(p for p in ev.prev_event_ids if p not in found)
            frontier = nxt - set(found)
        rows = sorted(found.values(), key=lambda r: (-int(r.pdu.get("depth", 0)), -r.event_nid))
        return [federation_form(r) for r in rows]

    async def events_visible_to_server(self, server: str, event_ids: list[str]) -> list[str]:
        """Which of `event_ids` `server` may see in full, by the history visibility of the
        state before each event: world_readable/shared (default) -> yes; invited -> one of
        its users invited or joined then; joined -> one joined then. Outliers (state
        unknown) and its own users' membership events count as visible. Unknown events
        are left out."""
        rows = await self.store.get_event_rows(list(dict.fromkeys(event_ids)))
        by_snapshot: dict[int, bool] = {}
        out: list[str] = []
        for r in rows:
            snap = r.before_snapshot_nid
            sk = r.pdu.get("state_key")
            if r.after_snapshot_nid == 0 or (r.pdu.get("type") == "m.room.member" and isinstance(sk, str)
                                            and _domain(sk) == server):
                out.append(r.event_id)  # outliers, and the server's own users' memberships
                continue
            if snap not in by_snapshot:
                by_snapshot[snap] = await self._snapshot_visible(server, snap)
            if by_snapshot[snap]:
                out.append(r.event_id)
        return out

    async def _snapshot_visible(self, server: str, snapshot_nid: int) -> bool:
        nids = await self.store.load_snapshot(snapshot_nid)
        names = await self.store.state_names(nids)
        hv_nid = next((nids[k] for k, n in names.items() if n == ("m.room.history_visibility", "")), None)
        wanted = [nids[k] for k, (t, sk) in names.items() if t == "m.room.member" and _domain(sk) == server]
        rows = {r.event_nid: r for r in await self.store.get_event_rows_by_nid(
            wanted + ([hv_nid] if hv_nid is not None else []))}
        vis = "shared"
        if hv_nid is not None and hv_nid in rows:
            content = rows[hv_nid].pdu.get("content")
            v = content.get("history_visibility") if isinstance(content, dict) else None
            vis = v if isinstance(v, str) else "shared"
        if vis in ("world_readable", "shared"):
            return True
        ok = ("invite", "join") if vis == "invited" else ("join",)
        for n in wanted:
            r = rows.get(n)
            c = r.pdu.get("content") if r is not None else None
            if isinstance(c, dict) and c.get("membership") in ok:
                return True
        return False

    # ---- membership handshakes ---------------------------------------------------------------
    async def make_membership_event(self, room_id: str, user_id: str, membership: str,
                                    supported_versions: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        if membership not in ("join", "leave", "knock"):
            raise bad_json(f"cannot make a {membership!r} event")
        if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
            raise bad_json("invalid user ID")
        room = await self.store.load_room(room_id)
        if room is None or CREATE_KEY not in room.state:
            raise not_found(f"unknown room {room_id}")
        rv = get_room_version(room.room_version)
        if membership in ("join", "knock") and supported_versions is not None \
                and rv.identifier not in supported_versions:
            raise incompatible_room_version(rv.identifier)
        if membership == "knock" and not rv.knock_join_rule:
            raise incompatible_room_version(rv.identifier, "this room version does not support knocking")
        state_rows = {(str(r.pdu.get("type")), str(r.pdu.get("state_key"))): r
                      for r in await self.store.get_event_rows([eid for eid, _ in room.state.values()])}
        state = {k: Event(r.pdu, get_room_version(r.room_version), r.event_id) for k, r in state_rows.items()}
        if not any(t == "m.room.member" and _domain(sk) == self.server_name and ev.membership == "join"
                   for (t, sk), ev in state.items()):
            # Our users all left: we cannot vouch for the room's state any more.
            raise not_found(f"no user of {self.server_name} is in room {room_id}")
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            authoriser = await self._restricted_authoriser(rv, room_id, user_id, state)
            if authoriser is not None:
                content[AUTHORISING_USER] = authoriser
        prevs = sorted(room.extremities.items(), key=lambda kv: kv[1][1], reverse=True)[:MAX_PREV_EVENTS]
        depth = max((d for _, (_, d) in prevs), default=0) + 1
        auth_keys = auth_types_for_event(rv, "m.room.member", user_id, user_id, content)
        auth_ids = [room.state[k][0] for k in sorted(auth_keys) if k in room.state]
        prev_ids = [eid for eid, _ in prevs]
        template: dict[str, Any] = {
            "type": "m.room.member", "room_id": room_id, "sender": user_id, "state_key": user_id,
            "content": content, "depth": depth, "origin_server_ts": now_ms(),
        }
        if rv.event_format is EventFormat.V1:
            refs = {r.event_id: r for r in await self.store.get_event_rows(prev_ids + auth_ids)}

            def ref(eid: str) -> list[Any]:
                r = refs.get(eid)
                h = {"sha256": encode_base64(compute_reference_hash(r.pdu, rv))} if r is not None else {}
                return [eid, h]

            template["prev_events"] = [ref(e) for e in prev_ids]
            template["auth_events"] = [ref(e) for e in auth_ids]
        else:
            template["prev_events"] = prev_ids
            template["auth_events"] = auth_ids
        if not rv.updated_redaction_rules:
            template["origin"] = _domain(user_id)
        # Would the event be allowed now? (The authorising server's signature is added
        # at send_join; pretend it is there.)
        probe = dict(template)
        probe["signatures"] = {_domain(content[AUTHORISING_USER]): {}} if AUTHORISING_USER in content else {}
        try:
            check_auth_rules(Event(probe, rv, "$probe"), state)
        except AuthError as e:
            raise forbidden(f"{user_id} may not {membership}: {e.reason}") from None
        return rv.identifier, template

    async def _restricted_authoriser(self, rv: Any, room_id: str, user_id: str,
                                     state: dict[tuple[str, str], Event]) -> str | None:
        """For a restricted join of a user not invited/joined: one of our joined users
        who may invite, if the user is in one of the allowed rooms; else an error."""
        jr = state.get(("m.room.join_rules", ""))
        rule = jr.content.get("join_rule") if jr is not None else "invite"
        if not ((rv.restricted_join_rule and rule == "restricted")
                or (rv.knock_restricted_join_rule and rule == "knock_restricted")):
            return None
        own = state.get(("m.room.member", user_id))
        if own is not None and own.membership in ("join", "invite"):
            return None
        allow = jr.content.get("allow") if jr is not None else None
        allowed = False
        for cond in allow if isinstance(allow, list) else []:
            if isinstance(cond, dict) and cond.get("type") == "m.room_membership" \
                    and isinstance(cond.get("room_id"), str):
                m = await self.store.membership(cond["room_id"], user_id)
                if m is not None and m[0] == "join":
                    allowed = True
                    break
        if not allowed:
            if rule == "knock_restricted":
                return None  # the auth check below refuses the join; knocking stays possible
            raise MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN",
                              "the user is not in any of the rooms the join rules allow")
        invite_level = get_named_level(state, "invite")
        for (t, sk), ev in sorted(state.items()):
            if t == "m.room.member" and ev.membership == "join" and _domain(sk) == self.server_name \
                    and get_user_power_level(sk, state) >= invite_level:
                return sk
        raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN", "no user of this server can authorise the join")

    async def check_membership_pdu(self, origin: str, room_id: str, pdu: dict[str, Any],
                                   membership: str) -> tuple[str, dict[str, Any]]:
        """(event_id, the PDU to input) for send_join/leave/knock: the event must be
        `membership` of a user of `origin`, for this room. A restricted join naming
        one of our users as authoriser gets our signature."""
        version = await self.store.room_row(room_id)
        if version is None:
            raise not_found(f"unknown room {room_id}")
        rv = get_room_version(str(version["room_version"]))
        if not isinstance(pdu, dict):
            raise bad_json("event must be an object")
        try:
            check_pdu_format(pdu, rv)
            event_id = event_id_of(pdu, rv)
        except (EventFormatError, NotStoredError) as e:
            raise bad_json(f"bad {membership} event: {e}") from None
        ev = Event(pdu, rv, event_id)
        if ev.room_id != room_id:
            raise bad_json("event is for another room")
        if ev.type != "m.room.member" or ev.membership != membership:
            raise bad_json(f"not a {membership} event")
        if ev.state_key != ev.sender or _domain(ev.sender) != origin:
            raise forbidden(f"the {membership} event must be of a user of {origin}")
        signed = {k: v for k, v in pdu.items() if k != "unsigned"}
        authoriser = ev.content.get(AUTHORISING_USER)
        if membership == "join" and rv.restricted_join_rule and isinstance(authoriser, str) \
                and _domain(authoriser) == self.server_name:
            signed = sign_event(signed, rv, self.server_name, self.signing_key)
        return event_id, signed
