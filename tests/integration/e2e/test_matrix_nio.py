"""A real client library (matrix-nio) against a live embedded homeserver."""
from __future__ import annotations

import nio


async def test_nio_register_create_send_sync(live_server):
    alice = nio.AsyncClient(live_server, "alice")
    bob = nio.AsyncClient(live_server, "bob")
    try:
        r = await alice.register("alice", "a-strong-password")
        assert isinstance(r, nio.RegisterResponse), r
        r = await bob.register("bob", "another-password")
        assert isinstance(r, nio.RegisterResponse), r

        created = await alice.room_create(name="nio room", invite=[bob.user_id])
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id

        sync = await bob.sync(timeout=3000)
        assert isinstance(sync, nio.SyncResponse), sync
        assert room_id in sync.rooms.invite
        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined

        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi from nio"})
        assert isinstance(sent, nio.RoomSendResponse), sent

        bodies: list[str] = []
        for _ in range(10):
            sync = await bob.sync(timeout=2000)
            assert isinstance(sync, nio.SyncResponse), sync
            room = sync.rooms.join.get(room_id)
            if room:
                bodies += [getattr(e, "body", None) for e in room.timeline.events]
            if "hi from nio" in bodies:
                break
        assert "hi from nio" in bodies

        # Log out and back in with the password.
        await bob.logout()
        bob2 = nio.AsyncClient(live_server, "bob")
        try:
            r = await bob2.login("another-password")
            assert isinstance(r, nio.LoginResponse), r
            r = await bob2.login("wrong-password")
            assert isinstance(r, nio.LoginError) and r.status_code == "M_FORBIDDEN"
        finally:
            await bob2.close()
    finally:
        await alice.close()
        await bob.close()
