"""User ID grammar (Client-Server spec, "User Identifiers") and generated IDs."""
from __future__ import annotations

import re
import secrets
import string

# Spec v1.8+: lowercase letters, digits and - . = _ / + in localparts.
_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
MAX_USER_ID_BYTES = 255


def full_user_id(localpart: str, server_name: str) -> str:
    return f"@{localpart}:{server_name}"


def localpart_error(localpart: str, server_name: str) -> str | None:
    """Why `localpart` can't be registered (None when it can)."""
    if not localpart:
        return "User ID cannot be empty"
    if not _LOCALPART_RE.fullmatch(localpart):  # `$` would accept a trailing "\n"
        return "User ID can only contain characters a-z, 0-9, or '._=-/+'"
    if localpart.startswith("_"):
        # Reserved for application services (Synapse does the same).
        return "User ID may not begin with '_'"
    if len(full_user_id(localpart, server_name).encode()) > MAX_USER_ID_BYTES:
        return f"User ID may not be longer than {MAX_USER_ID_BYTES} bytes"
    return None


def split_user_id(user_id: str) -> tuple[str, str] | None:
    """("localpart", "server") of a user ID, or None if it is not one."""
    if not user_id.startswith("@") or ":" not in user_id:
        return None
    localpart, _, server = user_id[1:].partition(":")
    if not server:
        return None
    return localpart, server


def local_localpart(user_or_localpart: str, server_name: str) -> str | None:
    """Localpart for a login identifier (a localpart or a full local user ID),
    lowercased as logins are case-insensitive; None for a remote user ID."""
    if user_or_localpart.startswith("@"):
        parts = split_user_id(user_or_localpart)
        if parts is None or parts[1] != server_name:
            return None
        return parts[0].lower()
    return user_or_localpart.lower()


def new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


def new_localpart() -> str:
    """A random localpart for registrations without a username (never all digits)."""
    return "u" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(11))


def new_access_token() -> str:
    return "axo_" + secrets.token_urlsafe(32)
