"""UserapiInternal: the in-process implementation of `services.userapi.api.UserAPI`."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from libs.config.model import HomeserverConfig
from libs.errors import unavailable
from libs.log.api import LogError, Producer
from services.userapi import pushers, pushrules
from services.userapi.api import (
    TOPIC_CLIENT_DATA,
    TOPIC_KEY_CHANGES,
    TOPIC_PRESENCE,
    Account,
    AccountDataChange,
    Device,
    LoginResult,
)
from services.userapi.key_backup import KeyBackups
from services.userapi.filters import FilterError, validate_filter
from services.userapi.identifiers import (
    full_user_id,
    localpart_error,
    new_access_token,
    new_device_id,
    split_user_id,
)
from libs.errors import MatrixError
from services.userapi.passwords import MAX_PASSWORD_LENGTH, check_password, hash_password
from services.userapi.storage.store import UserStore
from services.userapi.uia import UserInteractiveAuth

log = logging.getLogger(__name__)

ProfileHook = Callable[[str, dict[str, Any]], Awaitable[None]]
UserHook = Callable[[str], Awaitable[None]]
TokenRevokedHook = Callable[[str], None]

PUSH_RULES_TYPE = "m.push_rules"
# Account data a client may not write through the account-data API (Synapse does the same).
_RESERVED_GLOBAL_TYPES = {PUSH_RULES_TYPE}
OPENID_TOKEN_LIFETIME_S = 3600
PRESENCE_STATES = ("online", "offline", "unavailable")
_RESERVED_ROOM_TYPES = {"m.fully_read", PUSH_RULES_TYPE}
# Write last-seen at most this often per device.
_TOUCH_INTERVAL_MS = 60_000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class UserapiInternal:
    """Accounts, devices, tokens, profiles, account data, filters, push rules, UIA.

    Hooks the lead connects to other services:
      * `profile_change_hooks`: awaited with (user_id, {"displayname", "avatar_url"})
        after a profile change (to send new member events into the user's rooms);
      * `deactivation_hooks`: awaited with user_id after deactivation (to leave rooms);
      * `token_revoked_hooks`: called with user_id whenever access tokens of that
        user were revoked (ClientAuth drops its cache entries).
    """

    def __init__(
        self, config: HomeserverConfig, store: UserStore, producer: Producer | None,
        bcrypt_rounds: int = 12,
    ) -> None:
        self.config = config
        self.store = store
        self.producer = producer
        self.bcrypt_rounds = bcrypt_rounds
        self.server_name = config.server_name
        self.profile_change_hooks: list[ProfileHook] = []
        self.deactivation_hooks: list[UserHook] = []
        self.token_revoked_hooks: list[TokenRevokedHook] = []
        self._last_touch: dict[tuple[str, str], tuple[int, str | None]] = {}
        self.uia = UserInteractiveAuth(store, config.registration, config.server_name, self.check_password)
        self.key_backups = KeyBackups(store)

    # ---- helpers -------------------------------------------------------------
    def _local(self, user_id: str) -> str | None:
        parts = split_user_id(user_id)
        if parts is None or parts[1] != self.server_name:
            return None
        return parts[0]

    async def _publish(self, user_id: str, value: dict[str, Any]) -> None:
        if self.producer is None:
            return
        try:
            await self.producer.send(TOPIC_CLIENT_DATA, user_id, json.dumps(value).encode("utf-8"))
        except LogError as e:
            # The change is stored; the client retries (PUTs are idempotent) and the
            # retry publishes it.
            log.warning("could not publish %s for %s: %s", value.get("type"), user_id, e)
            raise unavailable() from e

    def _revoked(self, user_id: str) -> None:
        for hook in self.token_revoked_hooks:
            hook(user_id)

    # ---- accounts --------------------------------------------------------------
    async def localpart_error(self, localpart: str) -> str | None:
        return localpart_error(localpart, self.server_name)

    async def is_localpart_available(self, localpart: str) -> bool:
        return await self.store.get_account(localpart) is None

    async def create_account(
        self, localpart: str, password: str | None, is_guest: bool = False, is_admin: bool = False,
        password_hash: str | None = None, appservice: bool = False,
    ) -> Account:
        # Localparts starting with '_' are left to application services.
        why = localpart_error(localpart[1:] if appservice and localpart.startswith("_") else localpart,
                              self.server_name)
        if why is not None:
            raise MatrixError(400, "M_INVALID_USERNAME", why)
        if password is not None and len(password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Password too long")
        if not await self.is_localpart_available(localpart):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        hashed = await hash_password(password, self.bcrypt_rounds) if password else password_hash
        user_id = full_user_id(localpart, self.server_name)
        now = _now_ms()
        if not await self.store.insert_account(localpart, user_id, hashed, now, is_guest, is_admin):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        # Synapse's default: the display name starts as the localpart (guests get none).
        await self.store.set_displayname(user_id, None if is_guest else localpart)
        return Account(user_id=user_id, created_ts=now, is_guest=is_guest, is_admin=is_admin)

    async def hash_password(self, password: str) -> str:
        """A hash create_account(password_hash=) accepts (so UIA sessions never keep a password)."""
        if len(password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Password too long")
        return await hash_password(password, self.bcrypt_rounds)

    async def get_account(self, user_id: str) -> Account | None:
        localpart = self._local(user_id)
        if localpart is None:
            return None
        row = await self.store.get_account(localpart)
        if row is None:
            return None
        return Account(row.user_id, row.created_ts, row.is_guest, row.deactivated, row.is_admin)

    async def check_password(self, user_id: str, password: str) -> bool:
        localpart = self._local(user_id)
        if localpart is None or len(password) > MAX_PASSWORD_LENGTH:
            return False
        row = await self.store.get_account(localpart)
        if row is None or row.deactivated or not row.password_hash:
            return False
        return await check_password(password, row.password_hash)

    async def set_password(
        self, user_id: str, new_password: str, logout_devices_except: str | None = None
    ) -> None:
        localpart = self._local(user_id)
        if localpart is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
        if len(new_password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Password too long")
        await self.store.set_password_hash(localpart, await hash_password(new_password, self.bcrypt_rounds))
        if logout_devices_except is not None:
            await self.store.delete_all_devices(user_id, except_device=logout_devices_except)
            self._revoked(user_id)

    async def deactivate_account(self, user_id: str) -> None:
        localpart = self._local(user_id)
        if localpart is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
        await self.store.deactivate(localpart, user_id)
        self._revoked(user_id)
        for hook in self.deactivation_hooks:
            try:
                await hook(user_id)
            except Exception:
                log.exception("deactivation hook failed for %s", user_id)

    # ---- devices and tokens ----------------------------------------------------
    async def create_device(
        self, user_id: str, device_id: str | None, display_name: str | None
    ) -> LoginResult:
        device_id = device_id or new_device_id()
        token = new_access_token()
        await self.store.create_device_with_token(user_id, device_id, display_name, token_hash(token), _now_ms())
        # Any earlier token of this device is gone.
        self._revoked(user_id)
        await self._device_list_changed(user_id)
        return LoginResult(user_id=user_id, device_id=device_id, access_token=token)

    async def query_access_token(self, token: str) -> Device | None:
        row = await self.store.get_token(token_hash(token))
        if row is None:
            return None
        return Device(row.user_id, row.device_id, row.display_name, row.last_seen_ts, row.last_seen_ip, row.is_guest)

    async def touch_device(self, user_id: str, device_id: str, ip: str | None) -> None:
        now = _now_ms()
        key = (user_id, device_id)
        last = self._last_touch.get(key)
        if last is not None and now - last[0] < _TOUCH_INTERVAL_MS and last[1] == ip:
            return
        if len(self._last_touch) > 100_000:
            self._last_touch.clear()
        self._last_touch[key] = (now, ip)
        await self.store.update_last_seen(user_id, device_id, now, ip)

    async def list_devices(self, user_id: str) -> list[Device]:
        return [
            Device(d.user_id, d.device_id, d.display_name, d.last_seen_ts, d.last_seen_ip)
            for d in await self.store.list_devices(user_id)
        ]

    async def get_device(self, user_id: str, device_id: str) -> Device | None:
        d = await self.store.get_device(user_id, device_id)
        return None if d is None else Device(d.user_id, d.device_id, d.display_name, d.last_seen_ts, d.last_seen_ip)

    async def update_device(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        found = await self.store.update_device_name(user_id, device_id, display_name)
        if found:
            await self._device_list_changed(user_id)
        return found

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        await self.store.delete_devices(user_id, device_ids)
        await self.store.delete_device_keys(user_id, device_ids)
        self._revoked(user_id)
        await self._device_list_changed(user_id)

    async def _device_list_changed(self, user_id: str) -> None:
        """A device came, went or was renamed: tell device-list watchers (/sync
        device_lists, /keys/changes). Best effort: the change itself is done."""
        try:
            await self._key_changed(user_id)
        except MatrixError:
            log.warning("device-list change of %s not published", user_id)

    async def logout(self, token: str) -> None:
        gone = await self.store.delete_token(token_hash(token))
        if gone is not None:
            self._revoked(gone[0])
            await self._device_list_changed(gone[0])

    async def logout_all(self, user_id: str) -> None:
        await self.store.delete_all_devices(user_id)
        self._revoked(user_id)
        await self._device_list_changed(user_id)

    # ---- end-to-end keys -------------------------------------------------------
    async def _key_changed(self, user_id: str) -> None:
        if self.producer is None:
            return
        try:
            await self.producer.send(TOPIC_KEY_CHANGES, user_id, json.dumps({"user_id": user_id}).encode())
        except LogError as e:
            log.warning("could not publish a key change for %s: %s", user_id, e)
            raise unavailable() from e

    async def upload_keys(self, user_id: str, device_id: str, device_keys: dict[str, Any] | None,
                          one_time_keys: dict[str, Any], fallback_keys: dict[str, Any]) -> dict[str, int]:
        """Store what a device uploads; returns its one-time key counts per algorithm."""
        if device_keys is not None:
            if device_keys.get("user_id") != user_id or device_keys.get("device_id") != device_id:
                raise MatrixError(400, "M_INVALID_PARAM", "device_keys must be for this user and device")
            if not isinstance(device_keys.get("keys"), dict) or not isinstance(device_keys.get("algorithms"), list):
                raise MatrixError(400, "M_BAD_JSON", "device_keys needs 'keys' and 'algorithms'")
            if await self.store.set_device_keys(user_id, device_id, device_keys):
                await self._key_changed(user_id)
        otks: list[tuple[str, str, dict[str, Any]]] = []
        for key_id, key in one_time_keys.items():
            algorithm, sep, _ = key_id.partition(":")
            if not sep or not algorithm:
                raise MatrixError(400, "M_INVALID_PARAM", f"Bad one-time key ID {key_id!r}")
            otks.append((key_id, algorithm, key))
        await self.store.add_one_time_keys(user_id, device_id, otks)
        for key_id, key in fallback_keys.items():
            algorithm, sep, _ = key_id.partition(":")
            if not sep or not algorithm:
                raise MatrixError(400, "M_INVALID_PARAM", f"Bad fallback key ID {key_id!r}")
            await self.store.set_fallback_key(user_id, device_id, algorithm, key_id, key)
        return await self.store.count_one_time_keys(user_id, device_id)

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return await self.store.count_one_time_keys(user_id, device_id)

    async def query_keys(self, wanted: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        """{user: {device: keys (with unsigned.device_display_name)}} for local users."""
        out: dict[str, dict[str, Any]] = {}
        for user_id, device_ids in wanted.items():
            if self._local(user_id) is None:
                continue
            keys = await self.store.get_device_keys(user_id)
            names = {d.device_id: d.display_name for d in await self.list_devices(user_id)}
            devs: dict[str, Any] = {}
            for dev, k in keys.items():
                if dev not in names or (device_ids and dev not in device_ids):
                    continue
                k = dict(k)
                k["unsigned"] = dict(k.get("unsigned") or {})  # always present, as in Synapse
                if names[dev] is not None:
                    k["unsigned"]["device_display_name"] = names[dev]
                devs[dev] = k
            out[user_id] = devs
        return out

    async def claim_keys(self, wanted: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for user_id, devices in wanted.items():
            if self._local(user_id) is None:
                continue
            for device_id, algorithm in devices.items():
                got = await self.store.claim_one_time_key(user_id, device_id, algorithm)
                if got is not None:
                    out.setdefault(user_id, {})[device_id] = {got[0]: got[1]}
        return out

    # ---- profile ---------------------------------------------------------------
    async def get_presence(self, user_id: str) -> dict[str, Any] | None:
        """The presence body of GET /presence/{userId}/status; None for unknown users."""
        localpart = self._local(user_id)
        if localpart is None or await self.store.get_account(localpart) is None:
            return None
        row = await self.store.get_presence(user_id)
        if row is None:
            return {"presence": "offline"}
        presence, status_msg, ts = row
        out: dict[str, Any] = {"presence": presence,
                               "last_active_ago": max(0, int(time.time() * 1000) - ts)}
        if presence == "online":
            out["currently_active"] = True
        if status_msg is not None:
            out["status_msg"] = status_msg
        return out

    async def set_presence(self, user_id: str, presence: str, status_msg: str | None) -> None:
        if presence not in PRESENCE_STATES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown presence state {presence!r}")
        ts = int(time.time() * 1000)
        await self.store.set_presence(user_id, presence, status_msg, ts)
        if self.producer is not None:  # the syncapi delivers it to users sharing rooms
            value = {"user_id": user_id, "presence": presence, "status_msg": status_msg, "last_active_ts": ts}
            try:
                await self.producer.send(TOPIC_PRESENCE, user_id, json.dumps(value).encode("utf-8"))
            except LogError as e:
                log.warning("could not publish presence for %s: %s", user_id, e)

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        localpart = self._local(user_id)
        if localpart is None or await self.store.get_account(localpart) is None:
            return None
        prof = await self.store.get_profile(user_id)
        out: dict[str, Any] = {}
        if prof is not None:
            if prof[0] is not None:
                out["displayname"] = prof[0]
            if prof[1] is not None:
                out["avatar_url"] = prof[1]
        return out

    async def _profile_changed(self, user_id: str) -> None:
        prof = await self.store.get_profile(user_id) or (None, None)
        value = {"displayname": prof[0], "avatar_url": prof[1]}
        await self._publish(user_id, {"type": "profile", "user_id": user_id, **value})
        for hook in self.profile_change_hooks:
            try:
                await hook(user_id, dict(value))
            except Exception:
                log.exception("profile hook failed for %s", user_id)

    async def set_displayname(self, user_id: str, displayname: str | None) -> None:
        await self.store.set_displayname(user_id, displayname)
        await self._profile_changed(user_id)

    async def set_avatar_url(self, user_id: str, avatar_url: str | None) -> None:
        await self.store.set_avatar_url(user_id, avatar_url)
        await self._profile_changed(user_id)

    # ---- account data ------------------------------------------------------------
    async def get_account_data(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        if room_id == "" and data_type == PUSH_RULES_TYPE:
            return await self.get_push_rules(user_id)
        return await self.store.get_account_data(user_id, room_id, data_type)

    async def set_account_data(
        self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]
    ) -> None:
        reserved = _RESERVED_ROOM_TYPES if room_id else _RESERVED_GLOBAL_TYPES
        if data_type in reserved:
            raise MatrixError(400, "M_BAD_JSON", f"Cannot set {data_type} through this API")
        await self._store_account_data(user_id, room_id, data_type, content)

    async def set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        """The m.fully_read marker (reserved for clients: only /read_markers and receipts set it)."""
        await self._store_account_data(user_id, room_id, "m.fully_read", {"event_id": event_id})

    async def _store_account_data(
        self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]
    ) -> None:
        stream_id = await self.store.set_account_data(user_id, room_id, data_type, content)
        await self._publish(user_id, {
            "type": "account_data", "user_id": user_id, "room_id": room_id,
            "data_type": data_type, "stream_id": stream_id,
        })

    async def get_account_data_since(self, user_id: str, since: int) -> list[AccountDataChange]:
        rows = await self.store.get_account_data_since(user_id, since)
        out = [AccountDataChange(r.room_id, r.data_type, r.content, r.stream_id) for r in rows]
        if since <= 0 and not any(c.room_id == "" and c.data_type == PUSH_RULES_TYPE for c in out):
            # Never edited: the defaults still belong in an initial sync.
            out.insert(0, AccountDataChange("", PUSH_RULES_TYPE, await self.get_push_rules(user_id), 0))
        return out

    async def current_account_data_stream_id(self) -> int:
        return await self.store.max_account_data_stream_id()

    # ---- filters -------------------------------------------------------------------
    async def create_filter(self, user_id: str, filter_json: dict[str, Any]) -> str:
        try:
            validate_filter(filter_json)
        except FilterError as e:
            raise MatrixError(400, e.errcode, str(e)) from None
        return str(await self.store.create_filter(user_id, filter_json))

    async def get_filter(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        if not filter_id.isdigit() or len(filter_id) > 18:
            return None
        return await self.store.get_filter(user_id, int(filter_id))

    # ---- push rules ----------------------------------------------------------------
    async def get_push_rules(self, user_id: str) -> dict[str, Any]:
        rules = await self.store.list_push_rules(user_id)
        overrides = await self.store.list_default_overrides(user_id)
        return {"global": pushrules.build_ruleset(user_id, rules, overrides)}

    async def get_push_rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any] | None:
        if kind not in pushrules.KINDS:
            return None
        ruleset = (await self.get_push_rules(user_id))["global"]
        return next((r for r in ruleset[kind] if r["rule_id"] == rule_id), None)

    async def _push_rules_changed(self, user_id: str) -> None:
        # Stored as account data too, so /sync sees the new rules like any other change.
        await self._store_account_data(user_id, "", PUSH_RULES_TYPE, await self.get_push_rules(user_id))

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in pushrules.KINDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind!r}")

    async def put_push_rule(
        self, user_id: str, kind: str, rule_id: str, body: dict[str, Any],
        before: str | None = None, after: str | None = None,
    ) -> None:
        self._check_kind(kind)
        if pushrules.is_default_rule_id(rule_id) or not rule_id:
            raise MatrixError(400, "M_INVALID_PARAM", "Rule IDs starting with '.' are reserved for server-default rules")
        if "/" in rule_id or "\\" in rule_id:
            raise MatrixError(400, "M_INVALID_PARAM", "Rule ID may not contain slashes")
        try:
            actions = pushrules.validate_actions(body.get("actions"))
            conditions: list[Any] | None = None
            pattern: str | None = None
            if kind in ("override", "underride"):
                conditions = pushrules.validate_conditions(body.get("conditions", []))
            elif kind == "content":
                pattern = body.get("pattern")
                if not isinstance(pattern, str):
                    raise pushrules.PushRuleError("content rules need a string pattern")
            # room/sender rule IDs name a room/user, but clients (and SyTest) also use
            # aliases and other strings there: any ID without slashes is accepted.
        except pushrules.PushRuleError as e:
            raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
        if before is not None and after is not None:
            raise MatrixError(400, "M_INVALID_PARAM", "Give at most one of before and after")
        for anchor in (before, after):
            if anchor is not None and pushrules.is_default_rule_id(anchor):
                raise MatrixError(400, "M_INVALID_PARAM", "Cannot position a rule relative to a server-default rule")
        all_rules = await self.store.list_push_rules(user_id)
        existing = next((r for r in all_rules if r.kind == kind and r.rule_id == rule_id), None)
        ordered = [r for r in all_rules if r.kind == kind and r.rule_id != rule_id]
        ordered.sort(key=lambda r: -r.priority)
        if existing is not None and before is None and after is None:
            priority = existing.priority  # replacing in place keeps the position
        else:
            try:
                priority = pushrules.new_priority(ordered, before, after)
            except KeyError:
                raise MatrixError(404, "M_NOT_FOUND", "before/after rule not found") from None
        await self.store.put_push_rule(user_id, kind, rule_id, priority, conditions, pattern, actions)
        await self._push_rules_changed(user_id)

    async def delete_push_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        self._check_kind(kind)
        if pushrules.is_default_rule_id(rule_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Cannot delete a server-default rule")
        if not await self.store.delete_push_rule(user_id, kind, rule_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown push rule")
        await self._push_rules_changed(user_id)

    async def _require_default(self, user_id: str, kind: str, rule_id: str) -> None:
        defaults = pushrules.default_rules(user_id)
        candidates = defaults[kind] + (defaults["master"] if kind == "override" else [])
        if not any(r["rule_id"] == rule_id for r in candidates):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown push rule")

    async def set_push_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        self._check_kind(kind)
        if pushrules.is_default_rule_id(rule_id):
            await self._require_default(user_id, kind, rule_id)
            await self.store.set_default_enabled(user_id, kind, rule_id, enabled)
        elif not await self.store.set_user_rule_enabled(user_id, kind, rule_id, enabled):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown push rule")
        await self._push_rules_changed(user_id)

    async def set_push_rule_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> None:
        self._check_kind(kind)
        try:
            pushrules.validate_actions(actions)
        except pushrules.PushRuleError as e:
            raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
        if pushrules.is_default_rule_id(rule_id):
            await self._require_default(user_id, kind, rule_id)
            await self.store.set_default_actions(user_id, kind, rule_id, actions)
        elif not await self.store.set_user_rule_actions(user_id, kind, rule_id, actions):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown push rule")
        await self._push_rules_changed(user_id)

    # ---- pushers ----------------------------------------------------------------------
    async def set_pusher(self, user_id: str, device_id: str, body: dict[str, Any]) -> None:
        """POST /pushers/set: validate, then create/replace (or, kind null, delete)."""
        for key in ("app_id", "pushkey"):
            if key not in body:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing {key}")
            if not isinstance(body[key], str) or not body[key] or len(body[key]) > 512:
                raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a non-empty string")
        if body.get("kind", "") is None:
            await self.store.delete_pusher(user_id, body["app_id"], body["pushkey"])
            return
        pusher = pushers.validate_pusher(body)
        await self.store.set_pusher(user_id, device_id, pusher, _now_ms(), replace_others=not body.get("append", False))

    async def get_pushers(self, user_id: str) -> list[dict[str, Any]]:
        return await self.store.list_pushers(user_id)

    # ---- OpenID ------------------------------------------------------------------------
    async def create_openid_token(self, user_id: str) -> tuple[str, int]:
        """A new OpenID token for the user and its lifetime in seconds."""
        token = new_access_token()
        now = _now_ms()
        await self.store.add_openid_token(token_hash(token), user_id, now + OPENID_TOKEN_LIFETIME_S * 1000, now)
        return token, OPENID_TOKEN_LIFETIME_S

    async def openid_userinfo(self, token: str) -> str | None:
        """The user an unexpired OpenID token was issued to, else None."""
        return await self.store.openid_token_user(token_hash(token), _now_ms())

    # ---- key backup (room_keys) ----------------------------------------------------------
    async def create_backup_version(self, user_id: str, body: dict[str, Any]) -> str:
        return await self.key_backups.create_version(user_id, body)

    async def get_backup_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        return await self.key_backups.get_version(user_id, version)

    async def update_backup_version(self, user_id: str, version: str, body: dict[str, Any]) -> None:
        await self.key_backups.update_version(user_id, version, body)

    async def delete_backup_version(self, user_id: str, version: str) -> None:
        await self.key_backups.delete_version(user_id, version)

    async def put_backup_keys(self, user_id: str, version: str | None, room_id: str | None,
                              session_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return await self.key_backups.put_keys(user_id, version, room_id, session_id, body)

    async def get_backup_keys(self, user_id: str, version: str | None, room_id: str | None,
                              session_id: str | None) -> dict[str, Any]:
        return await self.key_backups.get_keys(user_id, version, room_id, session_id)

    async def delete_backup_keys(self, user_id: str, version: str | None, room_id: str | None,
                                 session_id: str | None) -> dict[str, Any]:
        return await self.key_backups.delete_keys(user_id, version, room_id, session_id)

    # ---- user-interactive auth -------------------------------------------------------
    async def check_user_interactive_auth(
        self, purpose: str, flows: list[list[str]], auth: dict[str, Any] | None,
        user_id: str | None = None, params: dict[str, Any] | None = None, keep_session: bool = False,
    ) -> None:
        await self.uia.check(purpose, flows, auth, user_id, params, keep_session=keep_session)

    async def get_uia_data(self, session_id: str) -> dict[str, Any] | None:
        return await self.store.get_uia_data(session_id)

    async def set_uia_data(self, session_id: str, data: dict[str, Any]) -> None:
        await self.store.set_uia_data(session_id, data)
