"""POST /rooms/{roomId}/upgrade (mirrors tests/30rooms/60version_upgrade.pl in SyTest)."""
from __future__ import annotations

from urllib.parse import quote

from services.clientapi.routes_upgrade import needed_level, restricted_levels


def test_restricted_levels() -> None:
    assert restricted_levels({"events_default": 0, "invite": 0})["events_default"] == 50
    unusual = restricted_levels({"users_default": 80, "events_default": 0, "invite": 0})
    assert unusual is not None and unusual["events_default"] == 81 and unusual["invite"] == 81
    assert restricted_levels({"events_default": 60, "invite": 70}) is None
    assert needed_level({"events": {"m.x": 150}}) == 150


async def test_upgrade_creates_linked_room_with_copied_state(matrix) -> None:
    alice = await matrix.register()
    room = await matrix.create_room(alice, name="old name")
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.topic", json={"topic": "t"})
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.member/@bob:elsewhere",
                         json={"membership": "ban"})
    await matrix.request(alice, "PUT", f"/directory/list/room/{room}", json={"visibility": "public"})
    alias = "#up:test.local"
    await matrix.request(alice, "PUT", f"/directory/room/{quote(alias)}", json={"room_id": room})
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.canonical_alias", json={"alias": alias})
    await matrix.request(alice, "PUT", f"/user/{alice.user_id}/account_data/m.direct",
                         json={alice.user_id: [room]})
    first = await matrix.sync(alice)

    new = (await matrix.request(alice, "POST", f"/rooms/{room}/upgrade", json={"new_version": "2"}))[
        "replacement_room"]
    assert new != room
    resp = await matrix.sync(alice, first["next_batch"])
    old_tl = resp["rooms"]["join"][room]["timeline"]["events"]
    tombstone = old_tl[0]
    assert tombstone["type"] == "m.room.tombstone" and tombstone["content"]["replacement_room"] == new
    new_events = resp["rooms"]["join"][new]["timeline"]["events"] + resp["rooms"]["join"][new]["state"]["events"]
    create = next(e for e in new_events if e["type"] == "m.room.create")
    assert create["content"]["room_version"] == "2"
    assert create["content"]["predecessor"] == {"room_id": room, "event_id": tombstone["event_id"]}
    new_state = {(e["type"], e["state_key"]): e["content"] for e in
                 await matrix.request(alice, "GET", f"/rooms/{new}/state")}
    assert new_state[("m.room.name", "")] == {"name": "old name"}
    assert new_state[("m.room.topic", "")] == {"topic": "t"}
    assert new_state[("m.room.member", "@bob:elsewhere")] == {"membership": "ban"}
    assert new_state[("m.room.canonical_alias", "")] == {"alias": alias}
    assert await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.canonical_alias") == {}
    assert (await matrix.request(None, "GET", f"/directory/room/{quote(alias)}"))["room_id"] == new
    assert (await matrix.request(None, "GET", f"/directory/list/room/{new}"))["visibility"] == "public"
    assert (await matrix.request(None, "GET", f"/directory/list/room/{room}"))["visibility"] == "private"
    old_pl = await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.power_levels")
    assert old_pl["events_default"] == 50 and old_pl["invite"] == 50
    direct = await matrix.request(alice, "GET", f"/user/{alice.user_id}/account_data/m.direct")
    assert new in direct[alice.user_id]


async def test_upgrade_keeps_a_moderators_level(matrix) -> None:
    alice, mod = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(mod, room)
    pl = await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.power_levels")
    pl["users"][mod.user_id] = 50
    pl["events"]["m.room.tombstone"] = 50
    await matrix.request(alice, "PUT", f"/rooms/{room}/state/m.room.power_levels", json=pl)
    new = (await matrix.request(mod, "POST", f"/rooms/{room}/upgrade", json={"new_version": "9"}))[
        "replacement_room"]
    assert await matrix.request(mod, "GET", f"/rooms/{new}/state/m.room.power_levels") == pl
    # A moderator cannot restrict the old room's levels: they stay as they were.
    assert await matrix.request(mod, "GET", f"/rooms/{room}/state/m.room.power_levels") == pl


async def test_upgrade_to_v12_omits_the_predecessor_event(matrix) -> None:
    alice = await matrix.register()
    room = await matrix.create_room(alice, room_version="10")
    new = (await matrix.request(alice, "POST", f"/rooms/{room}/upgrade", json={"new_version": "12"}))[
        "replacement_room"]
    create = await matrix.request(alice, "GET", f"/rooms/{new}/state/m.room.create")
    assert create["predecessor"] == {"room_id": room} and create["room_version"] == "12"
    tomb = await matrix.request(alice, "GET", f"/rooms/{room}/state/m.room.tombstone")
    assert tomb["replacement_room"] == new


async def test_upgrade_refusals(matrix) -> None:
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room)
    r = await matrix.request(alice, "POST", f"/rooms/{room}/upgrade", expect=400, json={"new_version": "nope"})
    assert r["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    r = await matrix.request(bob, "POST", f"/rooms/{room}/upgrade", expect=403, json={"new_version": "2"})
    assert r["errcode"] == "M_FORBIDDEN"
    r = await matrix.request(alice, "POST", "/rooms/!fail:unknown/upgrade", expect=404, json={"new_version": "2"})
    assert r["errcode"] == "M_NOT_FOUND"
    r = await matrix.request(alice, "POST", f"/rooms/{room}/upgrade", expect=400, json={"new_version": 2})
    assert r["errcode"] == "M_BAD_JSON"
    # "Cannot send tombstone event that points to the same room"
    await matrix.request(alice, "PUT", f"/rooms/{room}/send/m.room.tombstone/t1", expect=400,
                         json={"replacement_room": room})
