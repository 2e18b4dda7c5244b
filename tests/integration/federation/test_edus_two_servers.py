"""Outbound EDUs end to end between two embedded servers on loopback TLS: what alice (hs1)
does — typing, a read receipt, presence, a to-device message — reaches bob (hs2) in the
room they share, through hs1's per-destination queue and hs2's /send."""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest

from services.roomserver.internal import RoomserverInternal

pytestmark = [pytest.mark.skipif(not hasattr(RoomserverInternal, "join_remote_room"),
                                 reason="needs the roomserver's federated joins"),
              pytest.mark.asyncio(loop_scope="package")]


async def sync_until(srv: Any, user: Any, pred: Any, since: str | None, deadline_s: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        resp = await srv.matrix.sync(user, since, timeout=1000)
        if pred(resp):
            return resp
        since = resp["next_batch"]
    raise AssertionError(f"not seen on {srv.name} within {deadline_s}s")


def ephemeral(resp: dict[str, Any], room_id: str, typ: str) -> list[dict[str, Any]]:
    room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in room.get("ephemeral", {}).get("events", []) if e.get("type") == typ]


async def test_typing_receipts_presence_and_to_device_cross_servers(shared_servers) -> None:
    hs1, hs2 = shared_servers
    alice, bob = await hs1.register(None), await hs2.register(None)
    room_id = await hs1.create_room(alice, preset="public_chat")
    r = await hs2.matrix.request(bob, "POST", f"/join/{quote(room_id, safe='')}?server_name={quote(hs1.name)}",
                                 json={})
    assert r["room_id"] == room_id
    first = await sync_until(hs2, bob, lambda s: room_id in s.get("rooms", {}).get("join", {}), None)
    since = first["next_batch"]
    # hs1 must know bob joined before it sends him anything
    await sync_until(hs1, alice, lambda s: any(
        e.get("state_key") == bob.user_id for e in s.get("rooms", {}).get("join", {}).get(room_id, {})
        .get("timeline", {}).get("events", [])), None)

    q = quote(room_id, safe="")
    await hs1.matrix.request(alice, "PUT", f"/rooms/{q}/typing/{quote(alice.user_id)}",
                             json={"typing": True, "timeout": 20000})
    got = await sync_until(hs2, bob, lambda s: any(alice.user_id in e["content"].get("user_ids", [])
                                                   for e in ephemeral(s, room_id, "m.typing")), since)
    since = got["next_batch"]

    event_id = await hs1.matrix.send(alice, room_id, "read me")
    await hs1.matrix.request(alice, "POST", f"/rooms/{q}/receipt/m.read/{quote(event_id, safe='')}", json={})
    got = await sync_until(hs2, bob, lambda s: any(
        alice.user_id in e["content"].get(event_id, {}).get("m.read", {})
        for e in ephemeral(s, room_id, "m.receipt")), since)
    since = got["next_batch"]

    await hs1.matrix.request(alice, "PUT", f"/presence/{quote(alice.user_id)}/status",
                             json={"presence": "online", "status_msg": "over here"})
    got = await sync_until(hs2, bob, lambda s: any(
        e.get("sender") == alice.user_id and e["content"].get("status_msg") == "over here"
        for e in s.get("presence", {}).get("events", [])), since)
    since = got["next_batch"]

    await hs1.matrix.request(alice, "PUT", "/sendToDevice/m.test/t1",
                             json={"messages": {bob.user_id: {bob.device_id: {"secret": 42}}}})
    got = await sync_until(hs2, bob, lambda s: any(
        e.get("sender") == alice.user_id and e.get("content") == {"secret": 42}
        for e in s.get("to_device", {}).get("events", [])), since)
