"""`POST /user_directory/search`, answered from the syncapi's projection.

Who is searchable for a searcher (as Synapse's default, `search_all_users: false`):
every joined member of a *public* room (join rule `public` or history visibility
`world_readable`), plus every other joined member of a room the searcher is joined
to. The searcher finds themselves only through public rooms. Names come from the
members' current `m.room.member` events (profile changes are propagated to every
room as member events), so no second copy of profiles is kept.

Computed per request from `current_state` (no table of its own): cheap for the
rooms of one searcher, one indexed scan of the public-room flags. A dedicated
projection (user → rooms, room → public) is the next step when this shows up.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request

from libs.errors import MatrixError
from libs.http import read_json_body
from libs.storage import Database
from services.syncapi.routes import PREFIXES, AuthDependency
from services.userapi.api import Device

MAX_LIMIT = 50
DEFAULT_LIMIT = 10
_CHUNK = 200


def _chunks(items: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield list(items[i:i + _CHUNK])


def _content(raw: Any) -> dict[str, Any]:
    try:
        obj = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError:
        return {}
    content = obj.get("content") if isinstance(obj, dict) else None
    return content if isinstance(content, dict) else {}


def matches(terms: list[str], user_id: str, display_name: str | None) -> bool:
    """Every search word appears in the user ID or the display name (case-insensitive)."""
    hay = f"{user_id} {display_name or ''}".lower()
    return all(t in hay for t in terms)


class UserDirectory:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def public_rooms(self) -> set[str]:
        rows = await self.db.fetch(
            "SELECT cs.room_id, cs.type, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id"
            " WHERE cs.state_key = '' AND cs.type IN ('m.room.join_rules', 'm.room.history_visibility')")
        out: set[str] = set()
        for row in rows:
            c = _content(row["json"])
            if (row["type"] == "m.room.join_rules" and c.get("join_rule") == "public") or (
                    row["type"] == "m.room.history_visibility" and c.get("history_visibility") == "world_readable"):
                out.add(row["room_id"])
        return out

    async def joined_rooms(self, user_id: str) -> set[str]:
        rows = await self.db.fetch(
            "SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1"
            " AND membership = 'join'", user_id)
        return {r["room_id"] for r in rows}

    async def members(self, room_ids: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
        """(room_id, user_id, member content) of the joined members of `room_ids`."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        for chunk in _chunks(sorted(room_ids)):
            marks = ", ".join(f"${i + 1}" for i in range(len(chunk)))
            rows = await self.db.fetch(
                "SELECT cs.room_id, cs.state_key, e.json FROM current_state cs JOIN events e"
                " ON e.event_id = cs.event_id WHERE cs.type = 'm.room.member' AND cs.membership = 'join'"
                f" AND cs.room_id IN ({marks})", *chunk)
            out += [(r["room_id"], r["state_key"], _content(r["json"])) for r in rows]
        return out

    async def search(self, searcher: str, term: str, limit: int) -> dict[str, Any]:
        terms = [t for t in term.lower().split() if t]
        public = await self.public_rooms()
        shared = await self.joined_rooms(searcher)
        found: dict[str, dict[str, Any]] = {}
        sharing: set[str] = set()
        for room_id, user_id, content in await self.members(list(public | shared)):
            if room_id not in public and user_id == searcher:
                continue  # sharing a private room with yourself does not list you
            name = content.get("displayname") if isinstance(content.get("displayname"), str) else None
            avatar = content.get("avatar_url") if isinstance(content.get("avatar_url"), str) else None
            if not matches(terms, user_id, name):
                continue
            if room_id in shared and user_id != searcher:
                sharing.add(user_id)
            entry = found.setdefault(user_id, {"user_id": user_id})
            if name is not None:
                entry["display_name"] = name
            if avatar is not None:
                entry["avatar_url"] = avatar
        # People the searcher shares rooms with first, then by name.
        ordered = sorted(found.values(), key=lambda e: (
            e["user_id"] not in sharing, (e.get("display_name") or e["user_id"]).lower(), e["user_id"]))
        return {"results": ordered[:limit], "limited": len(ordered) > limit}


def build_userdir_routers(directory: UserDirectory, auth: AuthDependency) -> list[APIRouter]:
    routers = []
    for prefix in PREFIXES:
        r = APIRouter(prefix=prefix)

        @r.post("/user_directory/search")
        async def search(request: Request, device: Device = Depends(auth)) -> dict[str, Any]:
            body = await read_json_body(request, 64 * 1024)
            term = body.get("search_term")
            if not isinstance(term, str):
                raise MatrixError(400, "M_BAD_JSON", "'search_term' must be a string")
            limit = body.get("limit", DEFAULT_LIMIT)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                raise MatrixError(400, "M_BAD_JSON", "'limit' must be a non-negative integer")
            return await directory.search(device.user_id, term, min(limit, MAX_LIMIT))

        routers.append(r)
    return routers
