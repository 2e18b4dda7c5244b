"""The syncapi end to end in the embedded homeserver, over the Client-Server API."""
from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import quote

from tests.integration.conftest import MatrixTestClient


def bodies(events: list[dict]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message" and "body" in e["content"]]


async def test_limited_sync_then_paginate_back(matrix: MatrixTestClient) -> None:
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room)
    sent = [await matrix.send(alice, room, f"msg{i}") for i in range(15)]
    flt = '{"room": {"timeline": {"limit": 5}}}'
    resp = await matrix.sync(bob, filter=flt)
    tl = resp["rooms"]["join"][room]["timeline"]
    assert tl["limited"] is True
    assert [e["event_id"] for e in tl["events"]] == sent[-5:]
    ids = [e["event_id"] for e in tl["events"]]
    token = tl["prev_batch"]
    while True:
        page = await matrix.request(bob, "GET", f"/rooms/{quote(room)}/messages",
                                    params={"dir": "b", "from": token, "limit": 4})
        ids[:0] = [e["event_id"] for e in reversed(page["chunk"])]
        if "end" not in page:
            break
        token = page["end"]
    assert ids[-15:] == sent
    assert len(ids) == len(set(ids))
    assert ids[0] == (await matrix.request(bob, "GET", f"/rooms/{quote(room)}/messages",
                                           params={"dir": "f", "limit": 1}))["chunk"][0]["event_id"]


async def test_long_poll_delivery_latency(matrix: MatrixTestClient) -> None:
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room)
    since = (await matrix.sync(bob))["next_batch"]
    latencies = []
    for i in range(5):
        poll = asyncio.create_task(matrix.sync(bob, since, timeout=10_000))
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        eid = await matrix.send(alice, room, f"ping{i}")
        resp = await asyncio.wait_for(poll, 10)
        latencies.append(time.perf_counter() - t0)
        assert eid in [e["event_id"] for e in resp["rooms"]["join"][room]["timeline"]["events"]]
        since = resp["next_batch"]
    print("send->sync latencies (s):", [round(x, 4) for x in latencies])
    assert statistics.median(latencies) < 1.0, latencies


async def test_typing_receipts_to_device_end_to_end(matrix: MatrixTestClient) -> None:
    alice, bob = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, preset="public_chat")
    await matrix.join(bob, room)
    eid = await matrix.send(alice, room, "read me")
    since = (await matrix.sync(bob))["next_batch"]
    await matrix.request(alice, "PUT", f"/rooms/{quote(room)}/typing/{quote(alice.user_id)}",
                         json={"typing": True, "timeout": 20000})
    await matrix.request(alice, "POST", f"/rooms/{quote(room)}/receipt/m.read/{quote(eid)}", json={})
    await matrix.request(alice, "PUT", "/sendToDevice/m.test/tx1",
                         json={"messages": {bob.user_id: {bob.device_id: {"hello": "bob"}}}})

    def complete(r: dict) -> bool:
        eph = r["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
        return any(e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"] for e in eph)

    got: dict = {"typing": False, "receipt": False, "to_device": False}
    for _ in range(20):
        r = await matrix.sync(bob, since, timeout=1000)
        eph = r["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
        got["typing"] |= complete(r)
        got["receipt"] |= any(e["type"] == "m.receipt" and eid in e["content"] for e in eph)
        got["to_device"] |= any(e["content"] == {"hello": "bob"} for e in r["to_device"]["events"])
        if all(got.values()):
            break
        since = r["next_batch"]
    assert all(got.values()), got


async def test_invite_leave_and_redaction(matrix: MatrixTestClient) -> None:
    alice, carol = await matrix.register(), await matrix.register()
    room = await matrix.create_room(alice, name="Secret")
    since = (await matrix.sync(carol))["next_batch"]
    await matrix.request(alice, "POST", f"/rooms/{quote(room)}/invite", json={"user_id": carol.user_id})
    r = await matrix.sync_until(carol, lambda r: room in r["rooms"]["invite"], since)
    state = r["rooms"]["invite"][room]["invite_state"]["events"]
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Secret" for e in state)
    await matrix.join(carol, room)
    eid = await matrix.send(alice, room, "to be redacted")
    await matrix.request(alice, "PUT", f"/rooms/{quote(room)}/redact/{quote(eid)}/r1", json={"reason": "no"})
    since = (await matrix.sync(carol))["next_batch"]
    page = await matrix.request(carol, "GET", f"/rooms/{quote(room)}/messages", params={"dir": "b", "limit": 5})
    red = [e for e in page["chunk"] if e["event_id"] == eid][0]
    assert red["content"] == {} and "redacted_because" in red["unsigned"]
    await matrix.request(carol, "POST", f"/rooms/{quote(room)}/leave", json={})
    r = await matrix.sync_until(carol, lambda r: room in r["rooms"]["leave"], since)
    assert room not in r["rooms"]["join"]


async def test_initial_sync_of_many_rooms_matches_each_room_synced_alone(matrix: MatrixTestClient) -> None:
    """A full /sync of several rooms reads their data in one batch (services/syncapi/prefetch.py);
    each room must come out exactly as when it is the only room of the response (no batch)."""
    import json

    alice, bob = await matrix.register(), await matrix.register()
    rooms = []
    for i, (preset, vis) in enumerate([("public_chat", None), ("private_chat", "joined"),
                                       ("public_chat", "invited")]):
        room = await matrix.create_room(alice, preset=preset, name=f"room {i}")
        if vis:
            await matrix.request(alice, "PUT", f"/rooms/{quote(room)}/state/m.room.history_visibility",
                                 json={"history_visibility": vis})
        await matrix.send(alice, room, f"before bob {i}")
        if preset == "private_chat":
            await matrix.request(alice, "POST", f"/rooms/{quote(room)}/invite", json={"user_id": bob.user_id})
        await matrix.join(bob, room)
        last = ""
        for j in range(4):
            last = await matrix.send(alice if j % 2 else bob, room, f"m{i}.{j}")
        if i == 0:  # a read receipt: unread counts differ per room
            await matrix.request(bob, "POST", f"/rooms/{quote(room)}/receipt/m.read/{quote(last)}", json={})
        rooms.append(room)
    await matrix.send(alice, rooms[1], "unread, mentions bob " + bob.user_id.split(":")[0][1:])

    def strip(room: dict) -> dict:
        room = json.loads(json.dumps(room))
        room["timeline"].pop("prev_batch", None)
        for part in ("timeline", "state"):
            for e in room[part]["events"]:
                e.get("unsigned", {}).pop("age", None)
        room["state"]["events"].sort(key=lambda e: (e["type"], e.get("state_key", "")))
        return room

    together = (await matrix.sync(bob, filter='{"room": {"timeline": {"limit": 12}}}'))["rooms"]["join"]
    assert set(rooms) <= set(together)
    for room in rooms:
        alone = (await matrix.sync(bob, filter=json.dumps(
            {"room": {"rooms": [room], "timeline": {"limit": 12}}})))["rooms"]["join"]
        assert list(alone) == [room]
        assert strip(together[room]) == strip(alone[room]), room
    assert together[rooms[1]]["unread_notifications"]["notification_count"] >= 1
    assert together[rooms[0]]["summary"]["m.joined_member_count"] == 2
