"""Partition then heal: hs1 and hs2 share a room; both federation listeners go down
(neither can reach the other), both sides send messages and conflicting state (room
name and topic on both, power levels on hs1), then the listeners come back. The
outbound queues retry (backoff ≤ 2 s in the test config), new messages on both sides
pull what is missing, and in the end both servers hold the same current state (event
ID by event ID) and each user's /messages has every message of both sides exactly once."""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote


from tests.integration.conftest import User

from .conftest import FedServer, wait_for
from .test_two_servers import join_remote

# (a fresh pair per test: `two_servers` lives on the test's own loop)


async def all_messages(srv: FedServer, user: User, room_id: str) -> list[str]:
    """Every m.room.message body of the room in the user's /messages, newest first."""
    bodies: list[str] = []
    frm: str | None = None
    for _ in range(50):
        q = "?dir=b&limit=50" + (f"&from={quote(frm, safe='')}" if frm else "")
        resp = await srv.matrix.request(user, "GET", f"/rooms/{quote(room_id, safe='')}/messages{q}")
        bodies += [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]
        if not resp["chunk"] or "end" not in resp:
            break
        frm = resp["end"]
    return bodies


async def state_ids(srv: FedServer, room_id: str) -> dict[tuple[str, str], str]:
    return {k: v["event_id"] for k, v in (await srv.roomserver.get_current_state(room_id)).items()}


async def put_state(srv: FedServer, user: User, room_id: str, ev_type: str, content: dict[str, Any]) -> str:
    r = await srv.matrix.request(user, "PUT", f"/rooms/{quote(room_id, safe='')}/state/{ev_type}/", json=content)
    return str(r["event_id"])


async def test_partition_then_heal_converges(two_servers):
    hs1, hs2 = two_servers
    alice, bob = await hs1.register("alice"), await hs2.register("bob")
    room_id = await hs1.create_room(alice, preset="public_chat", name="Before")
    assert await join_remote(hs2, bob, room_id, via=hs1.name) == room_id
    pl = (await hs1.roomserver.get_state_event(room_id, "m.room.power_levels", ""))["content"]
    pl["users"][bob.user_id] = 100  # Bob may change the name and topic on his side
    pl_id = await put_state(hs1, alice, room_id, "m.room.power_levels", pl)
    await wait_for(lambda: _has(hs2, pl_id), what="bob's power level on hs2")

    # Catch-up after the outage keeps only the newest PDU of the room per destination, so
    # the receiver must pull the rest of the other branch itself (get_missing_events).
    for srv in (hs1, hs2):
        srv.federation.queue.cfg.catchup_max_pdus = 1
    # Partition: neither server can reach the other.
    await hs1.stop_listener()
    await hs2.stop_listener()
    expected: list[str] = []
    for i in range(4):
        await hs1.matrix.send(alice, room_id, f"hs1 during {i}")
        await hs2.matrix.send(bob, room_id, f"hs2 during {i}")
        expected += [f"hs1 during {i}", f"hs2 during {i}"]
    name1 = await put_state(hs1, alice, room_id, "m.room.name", {"name": "Name from hs1"})
    name2 = await put_state(hs2, bob, room_id, "m.room.name", {"name": "Name from hs2"})
    await put_state(hs1, alice, room_id, "m.room.topic", {"topic": "Topic from hs1"})
    await put_state(hs2, bob, room_id, "m.room.topic", {"topic": "Topic from hs2"})
    pl2 = dict(pl, invite=50)
    await put_state(hs1, alice, room_id, "m.room.power_levels", pl2)
    await asyncio.sleep(1.0)  # (retries happen meanwhile: nothing gets through)
    assert await hs2.roomserver.get_event(name1) is None and await hs1.roomserver.get_event(name2) is None
    assert await state_ids(hs1, room_id) != await state_ids(hs2, room_id)

    # Heal, then new messages on both sides (each cites only its own branch: the other side pulls the rest).
    await hs1.start_listener()
    await hs2.start_listener()
    await hs1.matrix.send(alice, room_id, "hs1 after")
    await hs2.matrix.send(bob, room_id, "hs2 after")
    expected += ["hs1 after", "hs2 after"]

    async def converged() -> bool:
        s1, s2 = await state_ids(hs1, room_id), await state_ids(hs2, room_id)
        return s1 == s2

    await wait_for(converged, deadline_s=90, what="identical current state on both servers")
    s1 = await state_ids(hs1, room_id)
    assert s1 == await state_ids(hs2, room_id)
    name = (await hs1.roomserver.get_state_event(room_id, "m.room.name", ""))["content"]["name"]
    assert name in ("Name from hs1", "Name from hs2")
    pls = (await hs2.roomserver.get_state_event(room_id, "m.room.power_levels", ""))["content"]
    assert pls.get("invite") == 50  # hs1's change survived the merge

    async def all_seen() -> bool:
        for srv, user in ((hs1, alice), (hs2, bob)):
            got = await all_messages(srv, user, room_id)
            if sorted(got) != sorted(expected):
                return False
        return True

    await wait_for(all_seen, deadline_s=90, what="every message on both servers")
    for srv, user in ((hs1, alice), (hs2, bob)):
        got = await all_messages(srv, user, room_id)
        assert len(got) == len(set(got)) == len(expected), (srv.name, got)
        assert set(got) == set(expected)


async def _has(srv: FedServer, event_id: str) -> bool:
    return await srv.roomserver.get_event(event_id) is not None
