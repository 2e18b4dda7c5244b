"""The appservice service's public interface: registrations (who an AS is, what it owns)
and the names other services use. Implementation: `registration.py`, `sender.py`."""
from __future__ import annotations

from typing import Protocol

from services.appservice.registration import (
    AppService,
    AppServiceRegistry,
    Namespace,
    RegistrationError,
    load_registry,
)

__all__ = ["AppService", "AppServiceRegistry", "AppserviceAPI", "Namespace", "RegistrationError", "load_registry"]


class AppserviceAPI(Protocol):
    """What other services ask of the appservice service (the clientapi, over the internal
    RPC in the cluster; `AppserviceService` implements it in-process)."""

    async def query_alias(self, alias: str) -> bool:
        """Ask the ASes owning `alias`'s namespace to create it; True if one answered 2xx."""
        ...

    async def query_user(self, user_id: str) -> bool:
        """Ask the ASes owning `user_id`'s namespace about it; True if one answered 2xx."""
        ...

    async def network_rooms(self, network: str | None) -> list[str]:
        """Rooms the ASes published in their own directories (`network` None: all)."""
        ...
