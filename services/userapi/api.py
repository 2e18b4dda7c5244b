"""The userapi's public interface: accounts, devices, access tokens, profiles,
account data, filters, push rules (and later E2E keys and pushers).

It owns those tables; the clientapi and syncapi call this interface (in-process in
the embedded mode, over HTTP in the cluster). Changes that sync must show are
published on `user.client_data` (account data, profile) keyed by user_id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

TOPIC_CLIENT_DATA = "user.client_data"  # key: user_id; value: {"type": "account_data"|..., ...}
TOPIC_KEY_CHANGES = "user.key_changes"  # key: user_id


@dataclass
class Device:
    user_id: str
    device_id: str
    display_name: str | None = None
    last_seen_ts: int | None = None
    last_seen_ip: str | None = None
    is_guest: bool = False


@dataclass
class Account:
    user_id: str
    created_ts: int
    is_guest: bool = False
    deactivated: bool = False
    is_admin: bool = False


@dataclass
class LoginResult:
    user_id: str
    device_id: str
    access_token: str


@dataclass
class AccountDataChange:
    """One account-data entry as of its latest change (room_id "" = global)."""
    room_id: str
    data_type: str
    content: dict[str, Any]
    stream_id: int


# Values published on TOPIC_CLIENT_DATA (JSON objects, key user_id):
#   {"type": "account_data", "user_id", "room_id", "data_type", "stream_id"}
#     (push rule changes are published as data_type "m.push_rules", room_id "")
#   {"type": "profile", "user_id", "displayname", "avatar_url"}

# User-interactive auth purposes (a session is bound to one purpose and user).
UIA_REGISTER = "register"
UIA_PASSWORD = "password"
UIA_DEACTIVATE = "deactivate"
UIA_DELETE_DEVICES = "delete_devices"


class UserAPI(Protocol):
    # accounts
    async def is_localpart_available(self, localpart: str) -> bool: ...
    async def create_account(self, localpart: str, password: str | None, is_guest: bool = False, is_admin: bool = False) -> Account: ...
    async def get_account(self, user_id: str) -> Account | None: ...
    async def check_password(self, user_id: str, password: str) -> bool: ...
    async def set_password(self, user_id: str, new_password: str, logout_devices_except: str | None = None) -> None: ...
    async def deactivate_account(self, user_id: str) -> None: ...
    async def localpart_error(self, localpart: str) -> str | None: ...

    # devices and tokens
    async def create_device(self, user_id: str, device_id: str | None, display_name: str | None) -> LoginResult: ...
    async def query_access_token(self, token: str) -> Device | None: ...
    async def list_devices(self, user_id: str) -> list[Device]: ...
    async def get_device(self, user_id: str, device_id: str) -> Device | None: ...
    async def update_device(self, user_id: str, device_id: str, display_name: str | None) -> bool: ...
    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None: ...
    async def logout(self, token: str) -> None: ...
    async def logout_all(self, user_id: str) -> None: ...
    # Record use of a device (throttled; feeds last_seen_ts/last_seen_ip).
    async def touch_device(self, user_id: str, device_id: str, ip: str | None) -> None: ...

    # profile
    async def get_profile(self, user_id: str) -> dict[str, Any] | None: ...
    async def set_displayname(self, user_id: str, displayname: str | None) -> None: ...
    async def set_avatar_url(self, user_id: str, avatar_url: str | None) -> None: ...

    # account data (room_id "" = global)
    async def get_account_data(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None: ...
    async def set_account_data(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> None: ...
    async def set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None: ...
    async def get_presence(self, user_id: str) -> dict[str, Any] | None: ...
    async def set_presence(self, user_id: str, presence: str, status_msg: str | None) -> None: ...
    # For the syncapi: changes after `since` (a stream_id from a previous call / message).
    async def get_account_data_since(self, user_id: str, since: int) -> list[AccountDataChange]: ...
    async def current_account_data_stream_id(self) -> int: ...

    # filters
    async def create_filter(self, user_id: str, filter_json: dict[str, Any]) -> str: ...
    async def get_filter(self, user_id: str, filter_id: str) -> dict[str, Any] | None: ...

    # push rules
    async def get_push_rules(self, user_id: str) -> dict[str, Any]: ...
    async def get_push_rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any] | None: ...
    async def put_push_rule(self, user_id: str, kind: str, rule_id: str, body: dict[str, Any],
                            before: str | None = None, after: str | None = None) -> None: ...
    async def delete_push_rule(self, user_id: str, kind: str, rule_id: str) -> None: ...
    async def set_push_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None: ...
    async def set_push_rule_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> None: ...

    # user-interactive auth: returns normally once a flow is complete, else raises
    # the 401 MatrixError whose body is {flows, params, session, completed[, errcode, error]}.
    async def check_user_interactive_auth(self, purpose: str, flows: list[list[str]],
                                          auth: dict[str, Any] | None, user_id: str | None = None,
                                          params: dict[str, Any] | None = None) -> None: ...
