"""matrix-nio syncing against the embedded homeserver over real HTTP: its response
parsers validate our /sync, /messages and /context shapes."""
from __future__ import annotations

import asyncio

import nio


async def _client(url: str, name: str) -> nio.AsyncClient:
    c = nio.AsyncClient(url, name)
    reg = await c.register(name, "pw-" + name, device_name=name)
    assert isinstance(reg, nio.RegisterResponse), reg
    return c


async def test_nio_sync_messages_context(live_server: str) -> None:
    alice = await _client(live_server, "nioalice")
    bob = await _client(live_server, "niobob")
    try:
        created = await alice.room_create(name="nio room", preset=nio.RoomPreset.public_chat)
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined
        first = await bob.sync(timeout=0, full_state=True)
        assert isinstance(first, nio.SyncResponse), first
        assert room_id in first.rooms.join
        ids = []
        for i in range(6):
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"nio {i}"})
            assert isinstance(sent, nio.RoomSendResponse), sent
            ids.append(sent.event_id)
        typing = await alice.room_typing(room_id, True, 10000)
        assert isinstance(typing, nio.RoomTypingResponse), typing
        inc = await bob.sync(timeout=3000, since=first.next_batch)
        assert isinstance(inc, nio.SyncResponse), inc
        tl = inc.rooms.join[room_id].timeline
        assert [e.event_id for e in tl.events if isinstance(e, nio.RoomMessageText)][-1] == ids[-1]
        assert bob.rooms[room_id].display_name in ("nio room", "nio room")
        msgs = await bob.room_messages(room_id, start=inc.next_batch, limit=3)
        assert isinstance(msgs, nio.RoomMessagesResponse), msgs
        assert [e.event_id for e in msgs.chunk] == ids[-1:-4:-1]
        ctx = await bob.room_context(room_id, ids[2], limit=2)
        assert isinstance(ctx, nio.RoomContextResponse), ctx
        assert ctx.event.event_id == ids[2]
        members = await bob.joined_members(room_id)
        assert isinstance(members, nio.JoinedMembersResponse), members
        assert {m.user_id for m in members.members} == {alice.user_id, bob.user_id}
        # Long-poll through nio: a message sent while it waits arrives.
        poll = asyncio.create_task(bob.sync(timeout=10000, since=inc.next_batch))
        await asyncio.sleep(0.1)
        await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "late"})
        late = await asyncio.wait_for(poll, 10)
        assert isinstance(late, nio.SyncResponse), late
        bodies = [getattr(e, "body", None) for e in late.rooms.join[room_id].timeline.events]
        assert "late" in bodies
    finally:
        await alice.close()
        await bob.close()
