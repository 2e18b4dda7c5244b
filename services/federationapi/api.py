"""The federationapi's public interface.

Today it serves this server's signing keys (`/_matrix/key/v2/server`) and its
version; the Server-Server API (transactions, joins, backfill, outbound queues)
lands with the federation issue.
"""
from __future__ import annotations

from typing import Any, Protocol


class FederationAPI(Protocol):
    async def server_keys(self) -> dict[str, Any]:
        """This server's signed key response (`/_matrix/key/v2/server`)."""
        ...
