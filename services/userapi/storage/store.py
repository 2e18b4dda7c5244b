"""The userapi's SQL, written once for PostgreSQL and SQLite (libs.storage)."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from libs.errors import invalid_param
from libs.storage import Connection, Database, Row, UniqueViolation


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


@dataclass
class AccountRow:
    localpart: str
    user_id: str
    password_hash: str | None
    created_ts: int
    is_guest: bool
    is_admin: bool
    deactivated: bool


@dataclass
class DeviceRow:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


@dataclass
class TokenRow:
    user_id: str
    device_id: str
    is_guest: bool
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


@dataclass
class AccountDataRow:
    room_id: str
    data_type: str
    content: dict[str, Any]
    stream_id: int


@dataclass
class PushRuleRow:
    kind: str
    rule_id: str
    priority: float
    conditions: list[Any] | None
    pattern: str | None
    actions: list[Any]
    enabled: bool


@dataclass
class UIASessionRow:
    session_id: str
    purpose: str
    user_id: str | None
    created_ts: int
    completed: list[str]


def _check_args(args: Sequence[Any]) -> None:
    # PostgreSQL TEXT cannot hold NUL; refuse it on both databases alike (a 400,
    # not a driver error). JSON columns are safe: json.dumps escapes control chars.
    for a in args:
        if isinstance(a, str) and "\x00" in a:
            raise invalid_param("Strings may not contain NUL characters")


class _Guarded:
    """A Connection that checks every statement's arguments first."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        _check_args(args)
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        for r in rows:
            _check_args(r)
        await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        _check_args(args)
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        _check_args(args)
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _check_args(args)
        return await self._conn.fetchval(sql, *args)


class _GuardedDatabase(_Guarded):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._db = db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Guarded]:
        async with self._db.transaction() as tx:
            yield _Guarded(tx)


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db  # unguarded, for pings and tests
        self.q = _GuardedDatabase(db)

    # ---- accounts ------------------------------------------------------------
    async def insert_account(
        self, localpart: str, user_id: str, password_hash: str | None, created_ts: int,
        is_guest: bool, is_admin: bool,
    ) -> bool:
        """False if the localpart is taken."""
        try:
            got = await self.q.fetchval(
                "INSERT INTO accounts (localpart, user_id, password_hash, created_ts, is_guest, is_admin)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (localpart) DO NOTHING RETURNING localpart",
                localpart, user_id, password_hash, created_ts, is_guest, is_admin,
            )
        except UniqueViolation:
            return False
        return got is not None

    async def get_account(self, localpart: str) -> AccountRow | None:
        r = await self.q.fetchrow(
            "SELECT localpart, user_id, password_hash, created_ts, is_guest, is_admin, deactivated"
            " FROM accounts WHERE localpart = $1",
            localpart,
        )
        if r is None:
            return None
        return AccountRow(r[0], r[1], r[2], int(r[3]), bool(r[4]), bool(r[5]), bool(r[6]))

    async def set_password_hash(self, localpart: str, password_hash: str | None) -> None:
        await self.q.execute(
            "UPDATE accounts SET password_hash = $2 WHERE localpart = $1", localpart, password_hash
        )

    async def deactivate(self, localpart: str, user_id: str) -> None:
        """Mark deactivated, drop password, devices and tokens, clear the profile."""
        async with self.q.transaction() as tx:
            await tx.execute(
                "UPDATE accounts SET deactivated = TRUE, password_hash = NULL WHERE localpart = $1",
                localpart,
            )
            await tx.execute("DELETE FROM access_tokens WHERE user_id = $1", user_id)
            await tx.execute("DELETE FROM devices WHERE user_id = $1", user_id)
            await tx.execute(
                "UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = $1",
                user_id,
            )

    async def count_accounts(self) -> int:
        return int(await self.q.fetchval("SELECT COUNT(*) FROM accounts"))

    # ---- devices and tokens --------------------------------------------------
    async def create_device_with_token(
        self, user_id: str, device_id: str, display_name: str | None, token_hash: str, ts: int
    ) -> None:
        """Create the device if new (an existing device keeps its name) and give it
        `token_hash` as its only access token."""
        async with self.q.transaction() as tx:
            await tx.execute(
                "INSERT INTO devices (user_id, device_id, display_name, created_ts)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO NOTHING",
                user_id, device_id, display_name, ts,
            )
            await tx.execute(
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id
            )
            await tx.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)"
                " VALUES ($1, $2, $3, $4)",
                token_hash, user_id, device_id, ts,
            )

    async def get_token(self, token_hash: str) -> TokenRow | None:
        r = await self.q.fetchrow(
            "SELECT t.user_id, t.device_id, a.is_guest, d.display_name, d.last_seen_ts, d.last_seen_ip"
            " FROM access_tokens t"
            " JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id"
            " JOIN accounts a ON a.user_id = t.user_id"
            " WHERE t.token_hash = $1 AND a.deactivated = FALSE",
            token_hash,
        )
        if r is None:
            return None
        return TokenRow(r[0], r[1], bool(r[2]), r[3], r[4], r[5])

    async def delete_token(self, token_hash: str) -> tuple[str, str] | None:
        """Delete a token and its device; returns (user_id, device_id) or None."""
        async with self.q.transaction() as tx:
            r = await tx.fetchrow(
                "DELETE FROM access_tokens WHERE token_hash = $1 RETURNING user_id, device_id",
                token_hash,
            )
            if r is None:
                return None
            await tx.execute(
                "DELETE FROM devices WHERE user_id = $1 AND device_id = $2", r[0], r[1]
            )
            await tx.execute("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2", r[0], r[1])
            return (r[0], r[1])

    def _device(self, r: Any) -> DeviceRow:
        return DeviceRow(r[0], r[1], r[2], None if r[3] is None else int(r[3]), r[4])

    async def list_devices(self, user_id: str) -> list[DeviceRow]:
        rows = await self.q.fetch(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip"
            " FROM devices WHERE user_id = $1 ORDER BY device_id",
            user_id,
        )
        return [self._device(r) for r in rows]

    async def get_device(self, user_id: str, device_id: str) -> DeviceRow | None:
        r = await self.q.fetchrow(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip"
            " FROM devices WHERE user_id = $1 AND device_id = $2",
            user_id, device_id,
        )
        return None if r is None else self._device(r)

    async def update_device_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        r = await self.q.fetchval(
            "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2"
            " RETURNING device_id",
            user_id, device_id, name,
        )
        return r is not None

    async def update_last_seen(self, user_id: str, device_id: str, ts: int, ip: str | None) -> None:
        await self.q.execute(
            "UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4"
            " WHERE user_id = $1 AND device_id = $2",
            user_id, device_id, ts, ip,
        )

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        async with self.q.transaction() as tx:
            for device_id in device_ids:
                await tx.execute(
                    "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                    user_id, device_id,
                )
                await tx.execute(
                    "DELETE FROM devices WHERE user_id = $1 AND device_id = $2", user_id, device_id
                )
                await tx.execute(
                    "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2", user_id, device_id
                )

    async def delete_all_devices(self, user_id: str, except_device: str | None = None) -> None:
        keep = except_device if except_device is not None else ""
        async with self.q.transaction() as tx:
            await tx.execute(
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2", user_id, keep
            )
            await tx.execute(
                "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2", user_id, keep
            )
            await tx.execute(
                "DELETE FROM pushers WHERE user_id = $1 AND device_id <> $2", user_id, keep
            )

    # ---- profiles ------------------------------------------------------------
    async def get_presence(self, user_id: str) -> tuple[str, str | None, int] | None:
        r = await self.q.fetchrow(
            "SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = $1", user_id
        )
        return None if r is None else (r[0], r[1], int(r[2]))

    async def set_presence(self, user_id: str, presence: str, status_msg: str | None, ts: int) -> None:
        await self.q.execute(
            "INSERT INTO presence (user_id, presence, status_msg, last_active_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence,"
            " status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts",
            user_id, presence, status_msg, ts,
        )

    async def get_profile(self, user_id: str) -> tuple[str | None, str | None] | None:
        r = await self.q.fetchrow(
            "SELECT displayname, avatar_url FROM profiles WHERE user_id = $1", user_id
        )
        return None if r is None else (r[0], r[1])

    async def set_displayname(self, user_id: str, displayname: str | None) -> None:
        await self.q.execute(
            "INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname",
            user_id, displayname,
        )

    async def set_avatar_url(self, user_id: str, avatar_url: str | None) -> None:
        await self.q.execute(
            "INSERT INTO profiles (user_id, avatar_url) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET avatar_url = excluded.avatar_url",
            user_id, avatar_url,
        )

    # ---- account data --------------------------------------------------------
    async def set_account_data(
        self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]
    ) -> int:
        """Store and return the change's stream position."""
        async with self.q.transaction() as tx:
            stream_id = int(await tx.fetchval(
                "INSERT INTO account_data_stream (user_id) VALUES ($1) RETURNING stream_id", user_id
            ))
            await tx.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, data_type)"
                " DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
                user_id, room_id, data_type, _dumps(content), stream_id,
            )
        return stream_id

    async def bump_account_data_stream(self, user_id: str) -> int:
        """A stream position for a change stored elsewhere (push rules)."""
        return int(await self.q.fetchval(
            "INSERT INTO account_data_stream (user_id) VALUES ($1) RETURNING stream_id", user_id
        ))

    async def get_account_data(
        self, user_id: str, room_id: str, data_type: str
    ) -> dict[str, Any] | None:
        raw = await self.q.fetchval(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
            user_id, room_id, data_type,
        )
        return None if raw is None else json.loads(raw)

    async def get_account_data_since(self, user_id: str, since: int) -> list[AccountDataRow]:
        rows = await self.q.fetch(
            "SELECT room_id, data_type, content, stream_id FROM account_data"
            " WHERE user_id = $1 AND stream_id > $2 ORDER BY stream_id",
            user_id, since,
        )
        return [AccountDataRow(r[0], r[1], json.loads(r[2]), int(r[3])) for r in rows]

    async def max_account_data_stream_id(self) -> int:
        v = await self.q.fetchval("SELECT MAX(stream_id) FROM account_data_stream")
        return 0 if v is None else int(v)

    # ---- filters -------------------------------------------------------------
    async def create_filter(self, user_id: str, filter_json: dict[str, Any]) -> int:
        """Store a filter (identical filters share one ID) and return its ID."""
        text = _dumps(filter_json)
        for _ in range(5):
            existing = await self.q.fetchval(
                "SELECT filter_id FROM filters WHERE user_id = $1 AND filter_json = $2",
                user_id, text,
            )
            if existing is not None:
                return int(existing)
            try:
                async with self.q.transaction() as tx:
                    next_id = int(await tx.fetchval(
                        "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1",
                        user_id,
                    ))
                    await tx.execute(
                        "INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)",
                        user_id, next_id, text,
                    )
                return next_id
            except UniqueViolation:
                continue  # a concurrent writer took that ID; try again
        raise UniqueViolation("could not allocate a filter ID")

    async def get_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        raw = await self.q.fetchval(
            "SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2",
            user_id, filter_id,
        )
        return None if raw is None else json.loads(raw)

    # ---- push rules ----------------------------------------------------------
    async def list_push_rules(self, user_id: str) -> list[PushRuleRow]:
        rows = await self.q.fetch(
            "SELECT kind, rule_id, priority, conditions, pattern, actions, enabled"
            " FROM push_rules WHERE user_id = $1 ORDER BY kind, priority DESC, rule_id",
            user_id,
        )
        return [
            PushRuleRow(
                r[0], r[1], float(r[2]), None if r[3] is None else json.loads(r[3]), r[4],
                json.loads(r[5]), bool(r[6]),
            )
            for r in rows
        ]

    async def put_push_rule(
        self, user_id: str, kind: str, rule_id: str, priority: float,
        conditions: list[Any] | None, pattern: str | None, actions: list[Any],
    ) -> None:
        """Insert or replace a user rule (replacing keeps its enabled flag)."""
        await self.q.execute(
            "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, kind, rule_id) DO UPDATE"
            " SET priority = excluded.priority, conditions = excluded.conditions,"
            " pattern = excluded.pattern, actions = excluded.actions",
            user_id, kind, rule_id, priority,
            None if conditions is None else _dumps(conditions), pattern, _dumps(actions),
        )

    async def delete_push_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        r = await self.q.fetchval(
            "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3"
            " RETURNING rule_id",
            user_id, kind, rule_id,
        )
        return r is not None

    async def set_user_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        r = await self.q.fetchval(
            "UPDATE push_rules SET enabled = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3"
            " RETURNING rule_id",
            user_id, kind, rule_id, enabled,
        )
        return r is not None

    async def set_user_rule_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> bool:
        r = await self.q.fetchval(
            "UPDATE push_rules SET actions = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3"
            " RETURNING rule_id",
            user_id, kind, rule_id, _dumps(actions),
        )
        return r is not None

    async def list_default_overrides(
        self, user_id: str
    ) -> dict[tuple[str, str], tuple[bool | None, list[Any] | None]]:
        rows = await self.q.fetch(
            "SELECT kind, rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = $1",
            user_id,
        )
        return {
            (r[0], r[1]): (None if r[2] is None else bool(r[2]), None if r[3] is None else json.loads(r[3]))
            for r in rows
        }

    async def set_default_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        await self.q.execute(
            "INSERT INTO push_rule_defaults (user_id, kind, rule_id, enabled) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = excluded.enabled",
            user_id, kind, rule_id, enabled,
        )

    async def set_default_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> None:
        await self.q.execute(
            "INSERT INTO push_rule_defaults (user_id, kind, rule_id, actions) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET actions = excluded.actions",
            user_id, kind, rule_id, _dumps(actions),
        )

    # ---- pushers -----------------------------------------------------------------
    async def set_pusher(self, user_id: str, device_id: str, pusher: dict[str, Any], ts: int,
                         replace_others: bool) -> None:
        """Create or replace the user's pusher for (app_id, pushkey); with
        replace_others, other users' pushers with that (app_id, pushkey) go."""
        app_id, pushkey = pusher["app_id"], pusher["pushkey"]
        async with self.q.transaction() as tx:
            if replace_others:
                await tx.execute("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                                 app_id, pushkey, user_id)
            await tx.execute(
                "INSERT INTO pushers (user_id, app_id, pushkey, device_id, pusher_json, created_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET"
                " device_id = excluded.device_id, pusher_json = excluded.pusher_json",
                user_id, app_id, pushkey, device_id, _dumps(pusher), ts)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.q.execute("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                             user_id, app_id, pushkey)

    async def list_pushers(self, user_id: str) -> list[dict[str, Any]]:
        rows = await self.q.fetch(
            "SELECT pusher_json FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey", user_id)
        return [json.loads(r[0]) for r in rows]

    # ---- OpenID tokens --------------------------------------------------------------
    async def add_openid_token(self, token_hash: str, user_id: str, expires_ts: int, now: int) -> None:
        async with self.q.transaction() as tx:
            await tx.execute("DELETE FROM openid_tokens WHERE expires_ts < $1", now)
            await tx.execute("INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
                             token_hash, user_id, expires_ts)

    async def openid_token_user(self, token_hash: str, now: int) -> str | None:
        r = await self.q.fetchval(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts >= $2", token_hash, now)
        return None if r is None else str(r)

    # ---- key backup -------------------------------------------------------------
    async def create_backup_version(self, user_id: str, algorithm: str, auth_data: Any) -> int:
        async with self.q.transaction() as tx:
            top = await tx.fetchval("SELECT MAX(version) FROM e2e_backup_versions WHERE user_id = $1", user_id)
            version = int(top or 0) + 1
            await tx.execute(
                "INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)",
                user_id, version, algorithm, _dumps(auth_data))
            return version

    async def get_backup_version(self, user_id: str, version: int | None) -> tuple[int, str, Any, int] | None:
        """(version, algorithm, auth_data, etag) of that version, or of the latest when None."""
        if version is None:
            r = await self.q.fetchrow(
                "SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions"
                " WHERE user_id = $1 AND deleted = FALSE ORDER BY version DESC LIMIT 1", user_id)
        else:
            r = await self.q.fetchrow(
                "SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions"
                " WHERE user_id = $1 AND version = $2 AND deleted = FALSE", user_id, version)
        return None if r is None else (int(r[0]), r[1], json.loads(r[2]), int(r[3]))

    async def update_backup_version(self, user_id: str, version: int, algorithm: str, auth_data: Any) -> bool:
        r = await self.q.fetchrow(
            "UPDATE e2e_backup_versions SET algorithm = $3, auth_data = $4"
            " WHERE user_id = $1 AND version = $2 AND deleted = FALSE RETURNING version",
            user_id, version, algorithm, _dumps(auth_data))
        return r is not None

    async def delete_backup_version(self, user_id: str, version: int) -> bool:
        async with self.q.transaction() as tx:
            r = await tx.fetchrow(
                "UPDATE e2e_backup_versions SET deleted = TRUE"
                " WHERE user_id = $1 AND version = $2 AND deleted = FALSE RETURNING version", user_id, version)
            await tx.execute("DELETE FROM e2e_backup_keys WHERE user_id = $1 AND version = $2", user_id, version)
            return r is not None

    async def bump_backup_etag(self, user_id: str, version: int) -> None:
        await self.q.execute("UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
                             user_id, version)

    async def count_backup_keys(self, user_id: str, version: int) -> int:
        return int(await self.q.fetchval(
            "SELECT COUNT(*) FROM e2e_backup_keys WHERE user_id = $1 AND version = $2", user_id, version))

    async def get_backup_keys(self, user_id: str, version: int, room_id: str | None = None,
                              session_id: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        sql = "SELECT room_id, session_id, key_json FROM e2e_backup_keys WHERE user_id = $1 AND version = $2"
        args: list[Any] = [user_id, version]
        if room_id is not None:
            sql += " AND room_id = $3"
            args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = $4"
                args.append(session_id)
        rows = await self.q.fetch(sql, *args)
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    async def put_backup_keys(self, user_id: str, version: int,
                              keys: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        async with self.q.transaction() as tx:
            for room_id, session_id, key in keys:
                await tx.execute(
                    "INSERT INTO e2e_backup_keys (user_id, version, room_id, session_id, key_json)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, version, room_id, session_id)"
                    " DO UPDATE SET key_json = excluded.key_json",
                    user_id, version, room_id, session_id, _dumps(key))

    async def delete_backup_keys(self, user_id: str, version: int, room_id: str | None = None,
                                 session_id: str | None = None) -> None:
        sql = "DELETE FROM e2e_backup_keys WHERE user_id = $1 AND version = $2"
        args: list[Any] = [user_id, version]
        if room_id is not None:
            sql += " AND room_id = $3"
            args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = $4"
                args.append(session_id)
        await self.q.execute(sql, *args)

    # ---- end-to-end keys -------------------------------------------------------
    async def set_device_keys(self, user_id: str, device_id: str, keys: dict[str, Any]) -> bool:
        """Store the device keys; False when they were already exactly these."""
        cur = await self.q.fetchval(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2", user_id, device_id)
        new = _dumps(keys)
        if cur == new:
            return False
        await self.q.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
            user_id, device_id, new)
        return True

    async def get_device_keys(self, user_id: str) -> dict[str, dict[str, Any]]:
        rows = await self.q.fetch("SELECT device_id, key_json FROM e2e_device_keys WHERE user_id = $1", user_id)
        return {r[0]: json.loads(r[1]) for r in rows}

    async def delete_device_keys(self, user_id: str, device_ids: Sequence[str]) -> None:
        for d in device_ids:
            for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
                await self.q.execute(f"DELETE FROM {table} WHERE user_id = $1 AND device_id = $2", user_id, d)

    async def add_one_time_keys(self, user_id: str, device_id: str,
                                keys: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """(key_id, algorithm, key) rows; re-uploading an existing key ID keeps the first."""
        if keys:
            await self.q.executemany(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, key_id, algorithm, key_json)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
                [(user_id, device_id, kid, algo, _dumps(k)) for kid, algo, k in keys])

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = await self.q.fetch(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
            " GROUP BY algorithm", user_id, device_id)
        return {r[0]: int(r[1]) for r in rows}

    async def claim_one_time_key(self, user_id: str, device_id: str, algorithm: str) -> tuple[str, Any] | None:
        """Take (delete) one key of `algorithm`, else the fallback key (kept); None if neither."""
        async with self.q.transaction() as tx:
            r = await tx.fetchrow(
                "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
                " AND algorithm = $3 ORDER BY key_id LIMIT 1", user_id, device_id, algorithm)
            if r is not None:
                await tx.execute("DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
                                 " AND key_id = $3", user_id, device_id, r[0])
                return r[0], json.loads(r[1])
            f = await tx.fetchrow(
                "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2"
                " AND algorithm = $3", user_id, device_id, algorithm)
            return None if f is None else (f[0], json.loads(f[1]))

    async def set_fallback_key(self, user_id: str, device_id: str, algorithm: str, key_id: str,
                               key: Any) -> None:
        await self.q.execute(
            "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id, algorithm)"
            " DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json",
            user_id, device_id, algorithm, key_id, _dumps(key))

    async def fallback_key_algorithms(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.q.fetch(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2", user_id, device_id)
        return sorted(r[0] for r in rows)

    # ---- user-interactive auth sessions --------------------------------------
    async def create_uia_session(self, session_id: str, purpose: str, user_id: str | None, ts: int) -> None:
        await self.q.execute(
            "INSERT INTO uia_sessions (session_id, purpose, user_id, created_ts, completed)"
            " VALUES ($1, $2, $3, $4, $5)",
            session_id, purpose, user_id, ts, "[]",
        )

    async def get_uia_session(self, session_id: str) -> UIASessionRow | None:
        r = await self.q.fetchrow(
            "SELECT session_id, purpose, user_id, created_ts, completed FROM uia_sessions"
            " WHERE session_id = $1",
            session_id,
        )
        if r is None:
            return None
        return UIASessionRow(r[0], r[1], r[2], int(r[3]), json.loads(r[4]))

    async def set_uia_completed(self, session_id: str, completed: list[str]) -> None:
        await self.q.execute(
            "UPDATE uia_sessions SET completed = $2 WHERE session_id = $1",
            session_id, _dumps(completed),
        )

    async def get_uia_data(self, session_id: str) -> dict[str, Any] | None:
        raw = await self.q.fetchval("SELECT data FROM uia_sessions WHERE session_id = $1", session_id)
        return None if raw is None else dict(json.loads(raw))

    async def set_uia_data(self, session_id: str, data: dict[str, Any]) -> None:
        await self.q.execute("UPDATE uia_sessions SET data = $2 WHERE session_id = $1", session_id, _dumps(data))

    async def delete_uia_session(self, session_id: str) -> None:
        await self.q.execute("DELETE FROM uia_sessions WHERE session_id = $1", session_id)

    async def delete_uia_sessions_before(self, ts: int) -> None:
        await self.q.execute("DELETE FROM uia_sessions WHERE created_ts < $1", ts)
