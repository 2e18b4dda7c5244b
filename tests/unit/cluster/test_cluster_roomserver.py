"""ClusterRoomserver (the clientapi's roomserver in cluster mode): a room known to
exist is not asked about again; unknown rooms are asked every time; other queries
pass through."""
from __future__ import annotations

from typing import Any

from axon.cluster.services import ClusterRoomserver


class _Queries:
    def __init__(self, rooms: set[str]) -> None:
        self.rooms = rooms
        self.asked: list[str] = []

    async def room_exists(self, room_id: str) -> bool:
        self.asked.append(room_id)
        return room_id in self.rooms

    async def get_room_version(self, room_id: str) -> str:
        return "11"


async def test_positive_room_exists_is_remembered() -> None:
    q = _Queries({"!a:x"})
    rs = ClusterRoomserver(perform=None, queries=q)  # type: ignore[arg-type]
    assert await rs.room_exists("!a:x") and await rs.room_exists("!a:x")
    assert q.asked == ["!a:x"]
    assert not await rs.room_exists("!b:x")
    q.rooms.add("!b:x")  # created since: a no is never cached
    assert await rs.room_exists("!b:x")
    assert q.asked == ["!a:x", "!b:x", "!b:x"]
    assert await rs.get_room_version("!a:x") == "11"


async def test_cache_is_bounded() -> None:
    q = _Queries({f"!{i}:x" for i in range(5)})
    rs: Any = ClusterRoomserver(perform=None, queries=q)  # type: ignore[arg-type]
    rs._KNOWN_ROOMS_MAX = 3
    for i in range(5):
        assert await rs.room_exists(f"!{i}:x")
    assert len(rs._known_rooms) <= 3
