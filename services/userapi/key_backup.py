"""Server-side key backups: versions and the session keys backed up in them.

Only the latest version accepts keys (uploading to an older one is a 403
M_WRONG_ROOM_KEYS_VERSION).  A key replaces the stored one for its session only
when it is better: verified beats unverified, then a lower first_message_index,
then a lower forwarded_count.
"""
from __future__ import annotations

from typing import Any

from libs.errors import MatrixError, bad_json
from services.userapi.storage.store import UserStore

_KEY_FIELDS = {"first_message_index": int, "forwarded_count": int, "is_verified": bool, "session_data": object}


def _not_found(what: str = "Unknown backup version") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", what)


def _parse_version(version: str | None) -> int:
    if version is None or not version.isdigit() or len(version) > 18:
        raise _not_found()
    return int(version)


def _check_version_body(body: dict[str, Any]) -> tuple[str, Any]:
    algorithm = body.get("algorithm")
    if not isinstance(algorithm, str) or not algorithm:
        raise MatrixError(400, "M_MISSING_PARAM" if algorithm is None else "M_BAD_JSON", "algorithm: a string is required")
    if "auth_data" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing auth_data")
    return algorithm, body["auth_data"]


def _check_key(key: Any) -> dict[str, Any]:
    if not isinstance(key, dict):
        raise bad_json("a key backup must be an object")
    for name, typ in _KEY_FIELDS.items():
        if name not in key:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing {name}")
        v = key[name]
        if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise bad_json(f"{name} must be an integer")
        if typ is bool and not isinstance(v, bool):
            raise bad_json(f"{name} must be a boolean")
    return key


def _rank(key: dict[str, Any]) -> tuple[int, int, int]:
    """Smaller is better."""
    return (0 if key.get("is_verified") else 1, int(key.get("first_message_index", 0)),
            int(key.get("forwarded_count", 0)))


class KeyBackups:
    def __init__(self, store: UserStore) -> None:
        self.store = store

    async def create_version(self, user_id: str, body: dict[str, Any]) -> str:
        algorithm, auth_data = _check_version_body(body)
        return str(await self.store.create_backup_version(user_id, algorithm, auth_data))

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        row = await self.store.get_backup_version(user_id, None if version is None else _parse_version(version))
        if row is None:
            raise _not_found("No backup found" if version is None else "Unknown backup version")
        v, algorithm, auth_data, etag = row
        return {"version": str(v), "algorithm": algorithm, "auth_data": auth_data,
                "count": await self.store.count_backup_keys(user_id, v), "etag": str(etag)}

    async def update_version(self, user_id: str, version: str, body: dict[str, Any]) -> None:
        v = _parse_version(version)
        algorithm, auth_data = _check_version_body(body)
        if "version" in body and body["version"] != version:
            raise MatrixError(400, "M_INVALID_PARAM", "The version in the body does not match the URL")
        if not await self.store.update_backup_version(user_id, v, algorithm, auth_data):
            raise _not_found()

    async def delete_version(self, user_id: str, version: str) -> None:
        if not await self.store.delete_backup_version(user_id, _parse_version(version)):
            raise _not_found()

    async def _writable(self, user_id: str, version: str | None) -> int:
        v = _parse_version(version)
        latest = await self.store.get_backup_version(user_id, None)
        if latest is None or (latest[0] != v and await self.store.get_backup_version(user_id, v) is None):
            raise _not_found()
        if latest[0] != v:
            raise MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Not the current backup version",
                              current_version=str(latest[0]))
        return v

    async def _summary(self, user_id: str, v: int) -> dict[str, Any]:
        row = await self.store.get_backup_version(user_id, v)
        return {"etag": str(row[3] if row else 0), "count": await self.store.count_backup_keys(user_id, v)}

    async def put_keys(self, user_id: str, version: str | None, room_id: str | None, session_id: str | None,
                       body: dict[str, Any]) -> dict[str, Any]:
        v = await self._writable(user_id, version)
        incoming: list[tuple[str, str, dict[str, Any]]] = []
        if room_id is not None and session_id is not None:
            incoming.append((room_id, session_id, _check_key(body)))
        else:
            rooms = {room_id: body} if room_id is not None else body.get("rooms")
            if not isinstance(rooms, dict):
                raise MatrixError(400, "M_MISSING_PARAM" if rooms is None else "M_BAD_JSON", "rooms: an object is required")
            for rid, room in rooms.items():
                sessions = room.get("sessions") if isinstance(room, dict) else None
                if not isinstance(sessions, dict):
                    raise bad_json("each room needs a sessions object")
                incoming.extend((rid, sid, _check_key(k)) for sid, k in sessions.items())
        changed: list[tuple[str, str, dict[str, Any]]] = []
        for rid, sid, key in incoming:
            old = await self.store.get_backup_keys(user_id, v, rid, sid)
            if not old or _rank(key) < _rank(old[0][2]):
                changed.append((rid, sid, key))
        if changed:
            await self.store.put_backup_keys(user_id, v, changed)
            await self.store.bump_backup_etag(user_id, v)
        return await self._summary(user_id, v)

    async def get_keys(self, user_id: str, version: str | None, room_id: str | None,
                       session_id: str | None) -> dict[str, Any]:
        v = _parse_version(version)
        if await self.store.get_backup_version(user_id, v) is None:
            raise _not_found()
        rows = await self.store.get_backup_keys(user_id, v, room_id, session_id)
        if session_id is not None:
            if not rows:
                raise _not_found("No backed-up key for this session")
            return rows[0][2]
        rooms: dict[str, Any] = {}
        for rid, sid, key in rows:
            rooms.setdefault(rid, {"sessions": {}})["sessions"][sid] = key
        if room_id is not None:
            return rooms.get(room_id, {"sessions": {}})
        return {"rooms": rooms}

    async def delete_keys(self, user_id: str, version: str | None, room_id: str | None,
                          session_id: str | None) -> dict[str, Any]:
        v = _parse_version(version)
        if await self.store.get_backup_version(user_id, v) is None:
            raise _not_found()
        await self.store.delete_backup_keys(user_id, v, room_id, session_id)
        await self.store.bump_backup_etag(user_id, v)
        return await self._summary(user_id, v)
