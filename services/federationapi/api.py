"""The federationapi's public interface.

* `FederationAPI`: what other services may ask of the federationapi.
* `InboundPDUSink`: where validated inbound PDUs go (the roomserver's federated input,
  next); `UnsupportedPDUSink` refuses every PDU until that exists, so nothing a remote
  server sends is silently accepted.
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
    """Embedded-mode sink until the roomserver handles federated input: refuses each PDU."""

    async def receive_pdus(self, origin: str, pdus: list[Event]) -> dict[str, PDUError | None]:
        return {ev.event_id: PDUError(UNSUPPORTED_ERRCODE, UNSUPPORTED_MESSAGE) for ev in pdus}


class FederationAPI(Protocol):
    async def server_keys(self) -> dict[str, Any]:
        """This server's signed key response (`/_matrix/key/v2/server`)."""
        ...
