"""`RoomserverInternal`: the implementation of `RoomserverAPI`.

Writes (create_room, send_event) go through the durable input topic keyed by
room_id and wait for the reply of the room's worker (sent after the commit).
Queries read the roomserver's tables directly (indexed lookups).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

from libs.errors import MatrixError, bad_json, not_found, unsupported_room_version
from libs.events.builder import build_event
from libs.events.limits import EventFormatError
from libs.events.room_versions import UnsupportedRoomVersion, get_room_version
from libs.events.signing import SigningKey
from libs.log.api import Producer
from libs.log.reply import ReplyChannel, ReplyTimeout

from services.roomserver.api import (
    TOPIC_INPUT,
    CreateRoomRequest,
    FederatedInputResult,
    NewEventRequest,
    RoomMembership,
    SendResult,
    StateAndAuthChain,
)
from services.roomserver.consumers import encode_input
from services.roomserver.create import create_content, random_room_id
from services.roomserver.federation_reads import FederationReads
from services.roomserver.input import now_ms, result_error
from services.roomserver.storage.store import EventRow, RoomserverStore

StateMap = dict[tuple[str, str], dict[str, Any]]


def _client_pdu(row: EventRow) -> dict[str, Any]:
    pdu = dict(row.pdu)
    pdu["event_id"] = row.event_id
    pdu["room_id"] = row.room_id
    return pdu


def split_join_parts(state: list[Any], auth_chain: list[Any], part_bytes: int
                     ) -> list[tuple[list[Any], list[Any]]]:
    """(state, auth_chain) slices whose JSON stays under about `part_bytes` each (an event
    larger than that gets a part of its own); always at least one part."""
    parts: list[tuple[list[Any], list[Any]]] = [([], [])]
    size = 0
    for which, events in ((1, auth_chain), (0, state)):
        for ev in events:
            n = len(json.dumps(ev, separators=(",", ":"))) + 1
            if size + n > part_bytes and (parts[-1][0] or parts[-1][1]):
                parts.append(([], []))
                size = 0
            parts[-1][which].append(ev)
            size += n
    return parts


class RoomserverInternal:
    # Budget of one join_remote_room part record (the log refuses records over 1 MiB).
    join_part_bytes = 640 * 1024
    # ~47 bytes per state event ID in the join's output record (state_added): 20k ≈ 940 KB.
    max_join_state_events = 20_000

    def __init__(
        self,
        store: RoomserverStore,
        server_name: str,
        signing_key: SigningKey,
        producer: Producer,
        replies: ReplyChannel,
        *,
        input_topic: str = TOPIC_INPUT,
        reply_timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.server_name = server_name
        self.signing_key = signing_key
        self.producer = producer
        self.replies = replies
        self.input_topic = input_topic
        self.reply_timeout_s = reply_timeout_s
        # Room ID -> version of rooms known to exist: rooms are never deleted and a
        # room's version never changes, so positive answers are cached (bounded).
        self._room_versions: dict[str, str] = {}
        self.fed = FederationReads(store, server_name, signing_key)

    # ---- perform ---------------------------------------------------------------------
    async def _request(self, room_id: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        value = encode_input(kind, body, uuid.uuid4().hex)
        try:
            raw = await self.replies.request(
                self.producer, self.input_topic, room_id, value, timeout_s=self.reply_timeout_s
            )
        except ReplyTimeout:
            # The request is durable and may still be applied: a retry with the same
            # transaction ID returns the same event.
            raise MatrixError(503, "M_UNKNOWN", "the room is busy; try again") from None
        result = json.loads(raw)
        err = result_error(result)
        if err is not None:
            raise err
        return result

    async def create_room(self, req: CreateRoomRequest) -> str:
        try:
            rv = get_room_version(req.room_version)
        except UnsupportedRoomVersion:
            raise unsupported_room_version(f"unsupported room version {req.room_version!r}") from None
        create_pdu: dict[str, Any] | None = None
        if rv.hydra:
            # v12: the room ID is the create event's hash, so the create event is built
            # here, before the input record can be keyed by room ID.
            try:
                create = build_event(
                    rv, type="m.room.create", sender=req.creator, room_id=None,
                    content=create_content(req, rv), prev_events=[], auth_events=[], depth=1,
                    origin_server_ts=now_ms(), server_name=self.server_name,
                    signing_key=self.signing_key, state_key="",
                )
            except (EventFormatError, ValueError, TypeError) as e:
                raise bad_json(str(e)) from None
            room_id = create.room_id
            create_pdu = create.pdu
        else:
            room_id = req.room_id or random_room_id(self.server_name)
        result = await self._request(
            room_id, "create_room",
            {"room_id": room_id, "request": asdict(req), "create_event": create_pdu},
        )
        return str(result["room_id"])

    async def send_event(self, req: NewEventRequest) -> SendResult:
        result = await self._request(req.room_id, "new_event", asdict(req))
        return SendResult(event_id=str(result["event_id"]))

    # ---- queries ------------------------------------------------------------------------
    async def room_exists(self, room_id: str) -> bool:
        return await self.get_room_version(room_id) is not None

    async def get_room_version(self, room_id: str) -> str | None:
        version = self._room_versions.get(room_id)
        if version is not None:
            return version
        row = await self.store.room_row(room_id)
        if row is None:
            return None
        if len(self._room_versions) >= 100_000:
            self._room_versions.clear()
        version = self._room_versions[room_id] = str(row["room_version"])
        return version

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        row = await self.store.get_event_row(event_id)
        return None if row is None else _client_pdu(row)

    async def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = await self.store.get_event_rows(list(dict.fromkeys(event_ids)))
        return {r.event_id: _client_pdu(r) for r in rows}

    async def get_current_state(self, room_id: str) -> StateMap:
        return self._state_map(await self.store.current_state_rows(room_id))

    @staticmethod
    def _state_map(rows: list[EventRow]) -> StateMap:
        out: StateMap = {}
        for r in rows:
            sk = r.pdu.get("state_key")
            if isinstance(sk, str):
                out[(str(r.pdu.get("type")), sk)] = _client_pdu(r)
        return out

    async def get_state_event(self, room_id: str, event_type: str, state_key: str) -> dict[str, Any] | None:
        row = await self.store.current_state_event(room_id, event_type, state_key)
        return None if row is None else _client_pdu(row)

    async def get_state_at_event(self, event_id: str) -> StateMap:
        """The room state after `event_id` (including it, if it is a state event),
        as Synapse's state-at-event queries return it. Empty if the event is unknown."""
        row = await self.store.get_event_row(event_id)
        if row is None:
            return {}
        nids = await self.store.load_snapshot(row.after_snapshot_nid)
        return self._state_map(await self.store.get_event_rows_by_nid(list(nids.values())))

    async def get_state_before_event(self, event_id: str) -> StateMap:
        """The room state just before `event_id` (what federation /state serves)."""
        row = await self.store.get_event_row(event_id)
        if row is None:
            return {}
        nids = await self.store.load_snapshot(row.before_snapshot_nid)
        return self._state_map(await self.store.get_event_rows_by_nid(list(nids.values())))

    async def get_membership(self, room_id: str, user_id: str) -> RoomMembership | None:
        m = await self.store.membership(room_id, user_id)
        return None if m is None else RoomMembership(room_id, user_id, m[0], m[1])

    async def get_joined_members(self, room_id: str) -> list[str]:
        return await self.store.joined_members(room_id)

    async def get_rooms_for_user(
        self, user_id: str, memberships: tuple[str, ...] = ("join",)
    ) -> list[RoomMembership]:
        rows = await self.store.rooms_for_user(user_id, tuple(memberships))
        return [RoomMembership(rid, user_id, m, eid) for rid, m, eid in rows]

    async def resolve_alias(self, alias: str) -> str | None:
        return await self.store.resolve_alias(alias)

    async def set_alias(self, alias: str, room_id: str, creator: str) -> bool:
        """False if the alias is taken. Raises M_NOT_FOUND for an unknown room."""
        if not await self.room_exists(room_id):
            raise not_found(f"unknown room {room_id}")
        return await self.store.insert_alias(alias, room_id, creator, now_ms())

    async def remove_alias(self, alias: str) -> bool:
        return await self.store.delete_alias(alias)

    async def get_alias_creator(self, alias: str) -> str | None:
        return await self.store.alias_creator(alias)

    async def get_aliases(self, room_id: str) -> list[str]:
        return await self.store.aliases_for_room(room_id)

    async def set_room_visibility(self, room_id: str, visibility: str) -> None:
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
        if not await self.store.set_visibility(room_id, visibility):
            raise not_found(f"unknown room {room_id}")

    async def get_room_visibility(self, room_id: str) -> str:
        row = await self.store.room_row(room_id)
        if row is None:
            raise not_found(f"unknown room {room_id}")
        return str(row["visibility"])

    async def list_public_rooms(self) -> list[str]:
        return await self.store.public_rooms()


    # ---- federation ------------------------------------------------------------------------
    async def receive_federated_pdus(self, origin: str, room_id: str,
                                     pdus: list[dict[str, Any]]) -> FederatedInputResult:
        result = await self._request(room_id, "federated_pdus",
                                     {"origin": origin, "room_id": room_id, "pdus": pdus})
        return FederatedInputResult(results=dict(result.get("results") or {}))

    async def get_pdu(self, event_id: str) -> tuple[str, dict[str, Any]] | None:
        return await self.fed.get_pdu(event_id)

    async def get_state_and_auth_chain(self, room_id: str, event_id: str) -> StateAndAuthChain:
        return await self.fed.get_state_and_auth_chain(room_id, event_id)

    async def get_state_ids_and_auth_chain_ids(self, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        return await self.fed.get_state_ids_and_auth_chain_ids(room_id, event_id)

    async def get_auth_chain(self, event_ids: list[str]) -> list[dict[str, Any]]:
        return await self.fed.get_auth_chain(event_ids)

    async def get_missing_events(self, room_id: str, earliest: list[str], latest: list[str], limit: int,
                                 min_depth: int) -> list[dict[str, Any]]:
        return await self.fed.get_missing_events(room_id, earliest, latest, limit, min_depth)

    async def backfill(self, room_id: str, from_event_ids: list[str], limit: int) -> list[dict[str, Any]]:
        return await self.fed.backfill(room_id, from_event_ids, limit)

    async def backfill_from_remote(self, room_id: str, from_event_ids: list[str], limit: int) -> list[str]:
        result = await self._request(room_id, "backfill", {
            "room_id": room_id, "from_event_ids": list(from_event_ids), "limit": int(limit)})
        return [e for e in result.get("event_ids") or [] if isinstance(e, str)]

    async def events_visible_to_server(self, server: str, event_ids: list[str]) -> list[str]:
        return await self.fed.events_visible_to_server(server, event_ids)

    async def make_membership_event(self, room_id: str, user_id: str, membership: str,
                                    supported_versions: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        return await self.fed.make_membership_event(room_id, user_id, membership, supported_versions)

    async def receive_membership_pdu(self, origin: str, room_id: str, pdu: dict[str, Any],
                                     membership: str) -> StateAndAuthChain:
        """send_join / send_leave / send_knock (the federationapi checked signatures)."""
        event_id, signed = await self.fed.check_membership_pdu(origin, room_id, pdu, membership)
        result = await self._request(room_id, "federated_pdus",
                                     {"origin": origin, "room_id": room_id, "pdus": [signed]})
        err = (result.get("results") or {}).get(event_id, "not processed")
        if err is not None:
            raise MatrixError(403, "M_FORBIDDEN", f"the {membership} event was not accepted: {err}")
        if event_id in (result.get("soft_failed") or []):
            raise MatrixError(403, "M_FORBIDDEN", f"the {membership} event is not allowed by the current state")
        return await self.fed.get_state_and_auth_chain(room_id, event_id)

    async def join_remote_room(self, room_id: str, room_version: str, join_pdu: dict[str, Any],
                               state: list[dict[str, Any]], auth_chain: list[dict[str, Any]]) -> str:
        # A large room's state does not fit one input record (the log's 1 MiB limit): it
        # goes in parts the room's worker gathers; the last one carries the join.
        if len(state) > self.max_join_state_events:
            # The join's output record lists every state event ID; over the log's 1 MiB
            # limit it could never be published and would stall the outbox relay.
            raise MatrixError(413, "M_TOO_LARGE", f"the room's state is too large to join here "
                                                  f"({len(state)} events, at most {self.max_join_state_events})")
        parts = split_join_parts(state, auth_chain, self.join_part_bytes)
        join_id = uuid.uuid4().hex
        result: dict[str, Any] = {}
        for i, (st, ac) in enumerate(parts):
            body: dict[str, Any] = {"room_id": room_id, "room_version": room_version, "state": st, "auth_chain": ac}
            if len(parts) > 1:
                body.update(join_id=join_id, part=i, parts=len(parts))
            if i == len(parts) - 1:
                body["join_pdu"] = join_pdu
            result = await self._request(room_id, "join_remote_room", body)
        self._room_versions.pop(room_id, None)
        return str(result["event_id"])

    async def store_invite(self, room_version: str, invite_pdu: dict[str, Any],
                           invite_room_state: list[dict[str, Any]]) -> None:
        room_id = invite_pdu.get("room_id") if isinstance(invite_pdu, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise bad_json("invite event without a room_id")
        await self._request(room_id, "store_invite", {
            "room_version": room_version, "invite_pdu": invite_pdu, "invite_room_state": invite_room_state})

    async def store_outlier_membership(self, room_version: str, pdu: dict[str, Any],
                                       stripped_state: list[dict[str, Any]]) -> None:
        """Our user's invite, leave or knock in a room we are not in (done through a remote
        server): kept as an outlier, the membership recorded and published (stripped
        state under `unsigned.<membership>_room_state`). In a room we are in, it is input
        like any PDU."""
        room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise bad_json("membership event without a room_id")
        await self._request(room_id, "store_invite", {
            "room_version": room_version, "invite_pdu": pdu, "invite_room_state": stripped_state,
            "any_membership": True})
