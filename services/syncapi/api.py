"""The syncapi's public interface, and the record shapes of the topics it consumes.

The syncapi projects `roomserver.output` and the ephemeral/user topics into its own
tables, with its own stream positions (one increasing position per stream), and
serves /sync, /messages, /context and the member lists from them.

Producers (clientapi, federationapi, userapi) publish the records below as JSON
(``json.dumps(dataclasses.asdict(record))``) on the named topics, keyed as stated.
Every record is applied idempotently: redelivery changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# ---- topics the syncapi consumes (names without the deployment's prefix) --------
TOPIC_ROOMSERVER_OUTPUT = "roomserver.output"   # key: room_id; OutputNewEvent JSON
TOPIC_TYPING = "ephemeral.typing"               # key: room_id; TypingRecord JSON
TOPIC_RECEIPTS = "ephemeral.receipts"           # key: room_id; ReceiptRecord JSON
TOPIC_TO_DEVICE = "user.to_device"              # key: target user_id; ToDeviceRecord JSON
TOPIC_CLIENT_DATA = "user.client_data"          # key: user_id; ClientDataRecord JSON
TOPIC_KEY_CHANGES = "user.key_changes"          # key: user_id; KeyChangeRecord JSON

RECEIPT_TYPES = ("m.read", "m.read.private")


@dataclass
class TypingRecord:
    """A user started (typing=True, for timeout_ms) or stopped typing in a room.

    Every syncapi replica consumes all of these (per-instance consumer group)."""
    room_id: str
    user_id: str
    typing: bool
    timeout_ms: int = 30000


@dataclass
class ReceiptRecord:
    """A read receipt. receipt_type is m.read or m.read.private (m.fully_read is
    account data, sent through the userapi). thread_id None = unthreaded."""
    room_id: str
    user_id: str
    receipt_type: str
    event_id: str
    ts: int
    thread_id: str | None = None


@dataclass
class ToDeviceRecord:
    """A send-to-device message for one device of a local user, or "*" for all of
    its devices. message_id is unique per sender (dedup key: sender+message_id+device)."""
    sender: str
    type: str
    user_id: str          # the target user
    device_id: str        # a device ID or "*"
    content: dict[str, Any]
    message_id: str


@dataclass
class ClientDataRecord:
    """Account data changed (the userapi publishes it on user.client_data).
    room_id "" = global account data. Content is fetched with get_account_data."""
    user_id: str
    room_id: str
    data_type: str
    type: str = "account_data"


@dataclass
class KeyChangeRecord:
    """A user's device list or E2E keys changed (userapi → user.key_changes).

    /sync reports the user in `device_lists.changed` to everyone sharing a room."""
    user_id: str


@dataclass
class StreamToken:
    """A client-visible position in each syncapi stream (never a log offset)."""
    events: int = 0
    typing: int = 0
    receipts: int = 0
    to_device: int = 0
    account_data: int = 0
    device_lists: int = 0
    invites: int = 0  # reserved (membership changes live in the events stream)
    presence: int = 0  # this instance's presence counter (services/syncapi/presence.py)

    def to_string(self) -> str:
        return (
            f"s{self.events}_{self.typing}_{self.receipts}_{self.to_device}"
            f"_{self.account_data}_{self.device_lists}_{self.presence}"
        )


@dataclass
class TokenPositions:
    """What the syncapi has projected so far (for readiness and lag metrics)."""
    token: str
    events: int


class SyncAPI(Protocol):
    """In-process queries other services may make of the syncapi."""

    async def current_token(self) -> str:
        """The current sync token (what an initial /sync would return as next_batch)."""
        ...

    async def get_room_event_ids(self, room_id: str, limit: int = 50) -> list[str]:
        """The most recent timeline event IDs of a room, newest last (diagnostics)."""
        ...

    async def wait_for_event(self, event_id: str, timeout_s: float = 2.0) -> bool:
        """Wait (bounded) until the event is projected into a timeline; read-your-writes."""
        ...
