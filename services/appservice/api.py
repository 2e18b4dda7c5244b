"""The appservice service's public interface: registrations (who an AS is, what it owns)
and the names other services use. Implementation: `registration.py`, `sender.py`."""
from __future__ import annotations

from services.appservice.registration import (
    AppService,
    AppServiceRegistry,
    Namespace,
    RegistrationError,
    load_registry,
)

__all__ = ["AppService", "AppServiceRegistry", "Namespace", "RegistrationError", "load_registry"]
