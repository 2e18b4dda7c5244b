"""POST /user_directory/search (mirrors SyTest 52user-directory/01public.pl and 02private.pl)."""
from __future__ import annotations

import uuid

from services.syncapi.userdir import matches


def test_matches_every_word_case_insensitively() -> None:
    assert matches(["ali", "smi"], "@a:x", "Alice Smith")
    assert matches(["@a:x"], "@a:x", None)
    assert not matches(["bob"], "@a:x", "Alice")


def _name() -> str:
    return "N" + uuid.uuid4().hex[:12].upper()


async def _search(matrix, user, term: str, **extra) -> list[str]:
    body = await matrix.request(user, "POST", "/user_directory/search", json={"search_term": term, **extra})
    assert isinstance(body["limited"], bool)
    return [r["user_id"] for r in body["results"]]


async def _set_name(matrix, user, name: str) -> None:
    await matrix.request(user, "PUT", f"/profile/{user.user_id}/displayname", json={"displayname": name})


async def test_public_room_members_are_found(matrix) -> None:
    alice, bob = await matrix.register(), await matrix.register()
    name = _name()
    await _set_name(matrix, alice, name)
    assert await _search(matrix, bob, name) == []  # alice is in no room yet
    room = await matrix.create_room(alice, preset="public_chat")
    body = await matrix.request(bob, "POST", "/user_directory/search", json={"search_term": name.lower()})
    assert body["results"] == [{"user_id": alice.user_id, "display_name": name}]
    # display name changes are followed
    second = _name()
    await _set_name(matrix, alice, second)
    assert await _search(matrix, bob, second) == [alice.user_id]
    # leaving the only public room takes her out
    await matrix.request(alice, "POST", f"/rooms/{room}/leave", json={})
    assert await _search(matrix, bob, second) == []


async def test_private_rooms_list_only_people_you_share_them_with(matrix) -> None:
    alice, bob, eve = await matrix.register(), await matrix.register(), await matrix.register()
    name_a, name_b = _name(), _name()
    await _set_name(matrix, alice, name_a)
    await _set_name(matrix, bob, name_b)
    room = await matrix.create_room(alice, preset="private_chat", invite=[bob.user_id])
    await matrix.join(bob, room)
    assert await _search(matrix, bob, name_a) == [alice.user_id]
    assert await _search(matrix, eve, name_a) == []  # eve shares nothing with alice
    assert await _search(matrix, bob, name_b) == []  # you do not find yourself via a private room
    # world_readable history makes the room public; join_rules public too
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.history_visibility",
                         json={"history_visibility": "world_readable"})
    assert await _search(matrix, eve, name_a) == [alice.user_id]
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.history_visibility",
                         json={"history_visibility": "shared"})
    assert await _search(matrix, eve, name_a) == []
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.join_rules", json={"join_rule": "public"})
    assert await _search(matrix, bob, name_b) == [bob.user_id]
    await matrix.request(bob, "POST", f"/rooms/{room}/leave", json={})
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.join_rules", json={"join_rule": "invite"})
    assert await _search(matrix, bob, name_a) == []


async def test_limit_and_bad_input(matrix) -> None:
    alice = await matrix.register()
    tag = _name()
    room = await matrix.create_room(alice, preset="public_chat")
    for _ in range(3):
        u = await matrix.register()
        await _set_name(matrix, u, f"{tag} member")
        await matrix.join(u, room)
    body = await matrix.request(alice, "POST", "/user_directory/search", json={"search_term": tag, "limit": 2})
    assert len(body["results"]) == 2 and body["limited"] is True
    r = await matrix.request(alice, "POST", "/user_directory/search", expect=400, json={"search_term": 5})
    assert r["errcode"] == "M_BAD_JSON"
    r = await matrix.request(alice, "POST", "/user_directory/search", expect=400, json={"search_term": "x", "limit": "1"})
    assert r["errcode"] == "M_BAD_JSON"
