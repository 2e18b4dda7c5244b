"""Outbound backfill: Bob (hs2) joins Alice's room (hs1) after 30 messages; his
backwards /messages from the join reaches them (fetched over /backfill), in order and
once each, and his /sync never shows them as new."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from .conftest import FedServer
from .test_two_servers import join_remote

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def page(srv: FedServer, user: Any, room_id: str, frm: str | None, limit: int) -> dict[str, Any]:
    q = f"?dir=b&limit={limit}" + (f"&from={quote(frm, safe='')}" if frm else "")
    return await srv.matrix.request(user, "GET", f"/rooms/{quote(room_id, safe='')}/messages{q}")


async def test_messages_backfill_reaches_history_from_before_the_join(shared_servers):
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await hs1.create_room(alice, preset="public_chat", name="History")
    sent = [await hs1.matrix.send(alice, room_id, f"old {i}") for i in range(30)]
    sent_ids = [s if isinstance(s, str) else s["event_id"] for s in sent]
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id
    first = await hs2.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("join", {}))
    timeline = first["rooms"]["join"][room_id]["timeline"]
    assert not any(e["event_id"] in sent_ids for e in timeline["events"])  # hs2 held only the join state

    # Page backwards from the join in pages of 7 until the end.
    seen: list[dict[str, Any]] = []
    frm: str | None = timeline.get("prev_batch")
    for _ in range(30):
        resp = await page(hs2, bob, room_id, frm, 7)
        seen += resp["chunk"]
        if not resp["chunk"] or "end" not in resp:
            break
        frm = resp["end"]
    ids = [e["event_id"] for e in seen]
    assert len(ids) == len(set(ids)), "an event came twice"
    msgs = [e["event_id"] for e in seen if e["type"] == "m.room.message"]
    assert msgs == list(reversed(sent_ids))
    bodies = [e["content"]["body"] for e in seen if e["type"] == "m.room.message"]
    assert bodies == [f"old {i}" for i in reversed(range(30))]
    assert seen[-1]["type"] == "m.room.create"  # all the way to the start of the room
    # Topological order: depths never increase going backwards.
    pdus = await hs2.roomserver.get_events(ids)
    depths = [pdus[i]["depth"] for i in ids if i in pdus]
    assert len(depths) == len(ids) and depths == sorted(depths, reverse=True)

    # The old messages never show up in /sync as new: an incremental sync after a new
    # message shows that one only, and a fresh initial sync's timeline ends with it.
    new_id = await hs1.matrix.send(alice, room_id, "new one")
    new_id = new_id if isinstance(new_id, str) else new_id["event_id"]
    later = await hs2.sync_until(bob, lambda r: any(
        e["event_id"] == new_id for e in r.get("rooms", {}).get("join", {}).get(room_id, {})
        .get("timeline", {}).get("events", [])), since=first["next_batch"])
    got = [e["event_id"] for e in later["rooms"]["join"][room_id]["timeline"]["events"]]
    assert not set(got) & set(sent_ids)
    fresh = await hs2.matrix.sync(bob)
    fresh_ids = [e["event_id"] for e in fresh["rooms"]["join"][room_id]["timeline"]["events"]]
    assert fresh_ids[-1] == new_id
    # Current state on hs2 is unchanged by the backfill: still one forward extremity chain.
    name = await hs2.roomserver.get_state_event(room_id, "m.room.name", "")
    assert name is not None and name["content"]["name"] == "History"


async def test_a_fruitless_start_point_is_not_asked_again_for_a_while():
    """A remote that is down (or has nothing older) is asked once per start point per
    RETRY_AFTER_S, not on every page that reaches it."""
    from typing import cast

    from libs.errors import MatrixError
    from services.syncapi.backfill import RETRY_AFTER_S, HistoryBackfill
    from services.syncapi.storage.store import SyncStore

    calls: list[list[str]] = []

    class DownRoomserver:
        async def backfill_from_remote(self, room_id: str, ids: list[str], limit: int) -> list[str]:
            calls.append(ids)
            raise MatrixError(502, "M_UNKNOWN", "unreachable")

    now = [100.0]
    hb = HistoryBackfill(cast(SyncStore, None), cast(Any, DownRoomserver()), clock=lambda: now[0])

    async def needed(room_id: str) -> str | None:
        return "$start"

    hb.needed = needed  # type: ignore[method-assign]
    assert await hb("!r:x", 10) == 0
    assert await hb("!r:x", 10) == 0
    assert calls == [["$start"]]
    now[0] += RETRY_AFTER_S + 1
    assert await hb("!r:x", 10) == 0
    assert len(calls) == 2


async def test_backfilled_history_respects_joined_visibility(shared_servers):
    """In a `joined` room, what was said before Bob joined stays hidden from him after
    backfill (the setting at the start of what hs2 held stands in for the older state)."""
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await hs1.create_room(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}])
    secret = [await hs1.matrix.send(alice, room_id, f"before bob {i}") for i in range(3)]
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id
    await hs2.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("join", {}))
    after = await hs1.matrix.send(alice, room_id, "after bob")
    await hs2.sync_until(bob, lambda r: any(
        e["event_id"] == after for e in r.get("rooms", {}).get("join", {}).get(room_id, {})
        .get("timeline", {}).get("events", [])))
    seen: list[str] = []
    frm: str | None = None
    for _ in range(10):
        resp = await page(hs2, bob, room_id, frm, 20)
        seen += [e["event_id"] for e in resp["chunk"]]
        if not resp["chunk"] or "end" not in resp:
            break
        frm = resp["end"]
    assert after in seen
    assert not set(secret) & set(seen)
    # They were fetched all the same (hs2 holds them now, as outliers).
    assert all([await hs2.roomserver.get_event(e) is not None for e in secret])


@pytest.mark.parametrize("room_version", ["1", "10"])
async def test_paging_back_from_the_join_lists_each_event_once(shared_servers, room_version: str):
    """SyTest's "Outbound federation can backfill events": Bob joins, then pages back with
    no `from` and follows `end` (absent `end` restarts from the newest). v1/v2 rooms list
    prev_events as [id, hashes] pairs: the backfill must see those as a gap too, or the
    pages only ever hold Bob's join, again and again."""
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await hs1.create_room(alice, preset="public_chat", room_version=room_version)
    sent = [await hs1.matrix.send(alice, room_id, f"m {i}") for i in range(10)]
    sent_ids = [s if isinstance(s, str) else s["event_id"] for s in sent]
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id
    await hs2.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("join", {}))
    want = 11  # the 10 messages and Bob's join
    seen: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(8):
        resp = await page(hs2, bob, room_id, token, want - len(seen))
        seen += resp["chunk"]
        token = resp.get("end")
        if len(seen) >= want:
            break
    ids = [e["event_id"] for e in seen]
    assert len(ids) == len(set(ids)), f"an event came twice: {ids}"
    assert seen[0]["type"] == "m.room.member" and seen[0]["state_key"] == bob.user_id
    assert [e["event_id"] for e in seen[1:want]] == list(reversed(sent_ids))
    # Paging on to the start of the room still lists nothing twice.
    while token is not None:
        resp = await page(hs2, bob, room_id, token, 5)
        seen += resp["chunk"]
        token = resp.get("end") if resp["chunk"] else None
    ids = [e["event_id"] for e in seen]
    assert len(ids) == len(set(ids)), f"an event came twice: {ids}"
    assert seen[-1]["type"] == "m.room.create"


async def test_roomserver_answers_only_history_not_what_it_held(shared_servers):
    """hs1's /backfill answer starts with Bob's join (the walk includes its start): the
    roomserver leaves it out of the IDs it gives the syncapi, which holds it already."""
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await hs1.create_room(alice, preset="public_chat")
    sent = [await hs1.matrix.send(alice, room_id, f"h {i}") for i in range(3)]
    sent_ids = [s if isinstance(s, str) else s["event_id"] for s in sent]
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id
    first = await hs2.sync_until(bob, lambda r: room_id in r.get("rooms", {}).get("join", {}))
    join_id = next(e["event_id"] for e in first["rooms"]["join"][room_id]["timeline"]["events"]
                   if e["type"] == "m.room.member" and e.get("state_key") == bob.user_id)
    ids = await hs2.roomserver.backfill_from_remote(room_id, [join_id], 20)
    assert join_id not in ids
    assert len(ids) == len(set(ids))
    assert ids[:3] == list(reversed(sent_ids))  # newest first
