"""The federationapi's public interface.

* `FederationAPI`: what other services may ask of the federationapi.
* `InboundPDUSink`: where validated inbound PDUs go — `transactions.RoomserverPDUSink`,
  the roomserver's federated input (wired in axon/embedded.py). `UnsupportedPDUSink`
  refuses every PDU: the default of a `FederationService` given no sink (tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from libs.events.event import Event

UNSUPPORTED_ERRCODE = "M_UNRECOGNIZED"
UNSUPPORTED_MESSAGE = "federated rooms not supported yet"


@dataclass(frozen=True, slots=True)
class PDUError:
    """Why one PDU of a transaction was not accepted (reported in the /send answer)."""
    errcode: str
    error: str


class InboundPDUSink(Protocol):
    async def receive_pdus(self, origin: str, pdus: list[Event]) -> dict[str, PDUError | None]:
        """Take PDUs that passed format, hash and signature checks (events whose hash did
        not match arrive redacted). Returns {event_id: None if accepted, else the error}."""
        ...


class UnsupportedPDUSink:
    """A sink that refuses each PDU (a federationapi built without a roomserver sink)."""

    async def receive_pdus(self, origin: str, pdus: list[Event]) -> dict[str, PDUError | None]:
        return {ev.event_id: PDUError(UNSUPPORTED_ERRCODE, UNSUPPORTED_MESSAGE) for ev in pdus}


class FederationAPI(Protocol):
    async def server_keys(self) -> dict[str, Any]:
        """This server's signed key response (`/_matrix/key/v2/server`)."""
        ...

    async def get_missing_events(self, origin: str, room_id: str, earliest: list[str], latest: list[str],
                                 limit: int, min_depth: int) -> list[dict[str, Any]]:
        """`POST /get_missing_events` to `origin`, each PDU checked like a /send PDU (the
        roomserver's `MissingEventsFetcher` in the cluster); [] when federation is off."""
        ...

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        """`GET /event_auth` at `origin`: the event's auth chain, each PDU checked; [] when off."""
        ...

    async def backfill(self, origin: str, room_id: str, from_event_ids: list[str], limit: int
                       ) -> list[dict[str, Any]]:
        """`GET /backfill` at `origin`: up to `limit` events before (and including)
        `from_event_ids`, each PDU checked like a /send PDU; [] when federation is off."""
        ...

    async def verify_request(self, method: str, uri: str, authorization: list[str]) -> str:
        """The origin of a bodiless federation request that another service serves (the
        mediaapi's `/_matrix/federation/v1/media/*`): `uri` is the path and query as sent,
        `authorization` its Authorization headers. 401 M_UNAUTHORIZED unless it verifies
        against the origin's keys; 403 when federation is disabled."""
        ...

    # Membership handshakes with other servers (services/federationapi/perform.py). Each
    # raises MatrixError (the remote's errcode when it refused; 502 when unreachable or its
    # answer did not verify; 403 M_FORBIDDEN when federation is disabled).
    async def perform_join(self, room_id: str, user_id: str, servers: list[str],
                           content: dict[str, Any]) -> str:
        """Join our `user_id` to a room we are not in (make_join/send_join via `servers`,
        then the room's own server); returns the join's event ID once it is in our store."""
        ...

    async def perform_leave(self, room_id: str, user_id: str, servers: list[str],
                            content: dict[str, Any]) -> str:
        """Leave (or reject the invite to) a room we are not joined to: make_leave/send_leave."""
        ...

    async def perform_invite(self, room_id: str, sender: str, invitee: str, content: dict[str, Any]) -> str:
        """Invite a remote user into a room we are in: the invite goes to their server first
        (PUT /invite v2), then into the room with their signature; returns its event ID."""
        ...

    async def perform_knock(self, room_id: str, user_id: str, servers: list[str],
                            content: dict[str, Any]) -> str:
        """Knock on a remote room: make_knock/send_knock."""
        ...

    async def query_room_alias(self, alias: str) -> tuple[str, list[str]]:
        """A remote alias via its server's /query/directory: (room_id, servers).
        404 M_NOT_FOUND when unknown."""
        ...

    # Queries of other servers for the clientapi (GET /profile, /keys/query|claim and
    # /publicRooms?server= naming remote users/servers). 403 M_FORBIDDEN when federation is off.
    async def query_profile(self, user_id: str) -> dict[str, Any] | None:
        """A remote user's profile (displayname/avatar_url) from their server; None when
        it knows no such user; 502 when it cannot be had."""
        ...

    async def query_remote_keys(self, server: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /user/keys/{kind} ("query" or "claim") at `server`: its answer; 502 when it fails."""
        ...

    async def query_public_rooms(self, server: str, params: dict[str, Any] | None,
                                 body: dict[str, Any] | None) -> dict[str, Any]:
        """`server`'s public room list (GET with `params`, or POST with `body`); 502 when it fails."""
        ...
