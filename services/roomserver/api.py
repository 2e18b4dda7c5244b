"""The roomserver's public interface: what other services may ask of it.

The roomserver owns the room event graph, state snapshots, forward extremities,
memberships (as state) and aliases. Other services never read its tables: they
call this interface (in-process in the embedded mode, over HTTP in the cluster)
or consume its output topic.

Writes go through the log (topic `roomserver.input`, keyed by room_id): the
caller produces an `InputRecord` and waits for the reply (correlation id) with a
deadline; the roomserver's single worker for that room builds, signs, auth-checks
and commits the event, writes an outbox row in the same transaction, and replies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# ---- topics (names without the deployment's prefix) -------------------------
TOPIC_INPUT = "roomserver.input"    # key: room_id; value: InputRecord JSON
TOPIC_OUTPUT = "roomserver.output"  # key: room_id; value: OutputRecord JSON


# ---- input -------------------------------------------------------------------
@dataclass
class NewEventRequest:
    """Ask the roomserver to build, sign and send a local event in a room."""
    room_id: str
    type: str
    sender: str
    content: dict[str, Any]
    state_key: str | None = None
    redacts: str | None = None
    # Client transaction, echoed in the output so the sender's /sync shows
    # `unsigned.transaction_id` and so retries are idempotent.
    device_id: str | None = None
    txn_id: str | None = None
    origin_server_ts: int | None = None


@dataclass
class CreateRoomRequest:
    """Body of POST /createRoom, already validated by the clientapi."""
    creator: str
    room_version: str
    preset: str | None = None
    visibility: str = "private"
    name: str | None = None
    topic: str | None = None
    room_alias_name: str | None = None
    invite: list[str] = field(default_factory=list)
    is_direct: bool = False
    initial_state: list[dict[str, Any]] = field(default_factory=list)
    creation_content: dict[str, Any] = field(default_factory=dict)
    power_level_content_override: dict[str, Any] | None = None
    device_id: str | None = None
    # The creator's profile, copied into their join event (as Synapse does).
    creator_displayname: str | None = None
    creator_avatar_url: str | None = None
    # A pre-chosen room ID (room upgrades: the tombstone names the new room before it
    # exists). Ignored for room versions whose room ID is the create event's hash.
    room_id: str | None = None


@dataclass
class SendResult:
    event_id: str
    # The room's stream of the roomserver is not the client's stream: clients only
    # ever see syncapi positions.


# ---- output ------------------------------------------------------------------
@dataclass
class OutputNewEvent:
    """A committed event, as published on `roomserver.output` (via the outbox).

    Small by design: the event itself plus the IDs of state added/removed from the
    room's current state, never the whole state."""
    event: dict[str, Any]           # the PDU, with "event_id" and "room_id" filled in
    room_version: str
    state_added: list[str]          # event IDs added to current state by this event
    state_removed: list[str]        # event IDs removed from current state
    soft_failed: bool = False
    rejected: bool = False
    device_id: str | None = None     # the local sender's device and txn id, if any
    txn_id: str | None = None
    # The previous output event ID for this room, so consumers can detect gaps.
    last_sent_event_id: str | None = None


# ---- queries -------------------------------------------------------------------
@dataclass
class RoomMembership:
    room_id: str
    user_id: str
    membership: str   # join | invite | leave | ban | knock
    event_id: str


@dataclass
class FederatedInputResult:
    # event_id -> None (accepted, including soft-failed) or why it was rejected / not stored
    results: dict[str, str | None]


@dataclass
class StateAndAuthChain:
    state: list[dict[str, Any]]       # PDUs in federation format (no event_id for v3+ rooms)
    auth_chain: list[dict[str, Any]]  # PDUs


class MissingEventsFetcher(Protocol):
    """What the roomserver asks the federationapi for when a PDU's prev_events are
    unknown (`POST /get_missing_events` to `origin`). Returns PDUs whose format,
    signatures and content hash the federationapi has checked (bad hash: redacted)."""

    async def get_missing_events(self, origin: str, room_id: str, earliest: list[str], latest: list[str],
                                 limit: int, min_depth: int) -> list[dict[str, Any]]: ...

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        """`GET /event_auth/{room_id}/{event_id}` at `origin`: the event's auth chain, checked."""
        ...

    async def backfill(self, origin: str, room_id: str, from_event_ids: list[str], limit: int
                       ) -> list[dict[str, Any]]:
        """`GET /backfill` at `origin`: events before (and including) `from_event_ids`, checked."""
        ...

    async def get_event(self, origin: str, room_id: str, event_id: str) -> dict[str, Any] | None:
        """`GET /event/{event_id}` at `origin`: the PDU, checked; None if not of the room."""
        ...

    async def get_state_ids(self, origin: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        """`GET /state_ids` at `origin`: (IDs of the state at the event, auth chain IDs)."""
        ...


class RoomserverAPI(Protocol):
    # perform (each goes through the input log and waits for the commit)
    async def create_room(self, req: CreateRoomRequest) -> str: ...
    async def send_event(self, req: NewEventRequest) -> SendResult: ...

    # queries
    async def room_exists(self, room_id: str) -> bool: ...
    async def get_room_version(self, room_id: str) -> str | None: ...
    async def get_event(self, event_id: str) -> dict[str, Any] | None: ...
    async def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]: ...
    async def get_current_state(self, room_id: str) -> dict[tuple[str, str], dict[str, Any]]: ...
    async def get_state_event(self, room_id: str, event_type: str, state_key: str) -> dict[str, Any] | None: ...
    async def get_state_at_event(self, event_id: str) -> dict[tuple[str, str], dict[str, Any]]: ...
    async def get_membership(self, room_id: str, user_id: str) -> RoomMembership | None: ...
    async def get_joined_members(self, room_id: str) -> list[str]: ...
    async def get_rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> list[RoomMembership]: ...
    async def resolve_alias(self, alias: str) -> str | None: ...
    async def set_alias(self, alias: str, room_id: str, creator: str) -> bool: ...
    async def remove_alias(self, alias: str) -> bool: ...
    async def get_aliases(self, room_id: str) -> list[str]: ...
    async def set_room_visibility(self, room_id: str, visibility: str) -> None: ...
    async def get_room_visibility(self, room_id: str) -> str: ...
    async def list_public_rooms(self) -> list[str]: ...

    # federation (services/roomserver/federated.py; see docs/architecture.md "Federated input")
    async def receive_federated_pdus(self, origin: str, room_id: str,
                                     pdus: list[dict[str, Any]]) -> FederatedInputResult: ...
    async def get_pdu(self, event_id: str) -> tuple[str, dict[str, Any]] | None: ...
    async def get_state_and_auth_chain(self, room_id: str, event_id: str) -> StateAndAuthChain: ...
    async def get_state_ids_and_auth_chain_ids(self, room_id: str, event_id: str) -> tuple[list[str], list[str]]: ...
    async def get_auth_chain(self, event_ids: list[str]) -> list[dict[str, Any]]: ...
    async def get_missing_events(self, room_id: str, earliest: list[str], latest: list[str], limit: int,
                                 min_depth: int) -> list[dict[str, Any]]: ...
    async def backfill(self, room_id: str, from_event_ids: list[str], limit: int) -> list[dict[str, Any]]: ...
    async def backfill_from_remote(self, room_id: str, from_event_ids: list[str], limit: int) -> list[str]:
        """Outbound backfill (a local /messages reached the start of what we hold): asks a
        server in the room for the events before `from_event_ids`, stores them as outliers
        (auth-checked; current state and forward extremities untouched) and returns the IDs
        of those accepted, newest (greatest depth) first. Never published on roomserver.output."""
        ...
    async def make_membership_event(self, room_id: str, user_id: str, membership: str,
                                    supported_versions: list[str] | None = None) -> tuple[str, dict[str, Any]]: ...
    async def receive_membership_pdu(self, origin: str, room_id: str, pdu: dict[str, Any],
                                     membership: str) -> StateAndAuthChain: ...
    async def join_remote_room(self, room_id: str, room_version: str, join_pdu: dict[str, Any],
                               state: list[dict[str, Any]], auth_chain: list[dict[str, Any]]) -> str: ...
    async def store_invite(self, room_version: str, invite_pdu: dict[str, Any],
                           invite_room_state: list[dict[str, Any]]) -> None: ...
    async def store_outlier_membership(self, room_version: str, pdu: dict[str, Any],
                                       stripped_state: list[dict[str, Any]]) -> None: ...
    async def events_visible_to_server(self, server: str, event_ids: list[str]) -> list[str]: ...


def decode_output_record(value: bytes) -> dict[str, Any] | None:
    """A `roomserver.output` record (the `OutputNewEvent` JSON) that consumers should
    act on, or None for records that are malformed, rejected or soft-failed (never
    delivered onwards). `record["event"]` is the PDU."""
    import json

    try:
        obj = json.loads(value)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), dict):
        return None
    if obj.get("rejected") or obj.get("soft_failed"):
        return None
    return obj
