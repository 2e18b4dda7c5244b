"""Helpers for federated-input tests: a fake remote server that crafts signed PDUs
on top of a room held by a local `RoomInputProcessor`."""
from __future__ import annotations

import time
from typing import Any

from libs.events.auth import auth_types_for_event
from libs.events.builder import build_event
from libs.events.event import Event
from libs.events.room_versions import get_room_version
from libs.events.signing import SigningKey

from services.roomserver.api import CreateRoomRequest
from services.roomserver.input import RoomInputProcessor

REMOTE = "remote.test"
REMOTE_KEY = SigningKey.from_seed(bytes(range(1, 33)), "r1")
OTHER = "other.test"
OTHER_KEY = SigningKey.from_seed(bytes(range(2, 34)), "o1")


class FakeRemote:
    def __init__(self, proc: RoomInputProcessor, room_id: str, version: str = "10",
                 server: str = REMOTE, key: SigningKey = REMOTE_KEY) -> None:
        self.proc = proc
        self.room_id = room_id
        self.rv = get_room_version(version)
        self.server = server
        self.key = key
        self._ts = int(time.time() * 1000)

    async def event(self, etype: str, sender: str, content: dict[str, Any], *, state_key: str | None = None,
                    prev: list[str] | None = None, auth: list[str] | None = None, depth: int | None = None,
                    ts: int | None = None, state: dict[tuple[str, str], str] | None = None) -> Event:
        """A signed PDU; prev/auth/depth default to the room's current extremities and state
        (or `state`, a (type, state_key) -> event_id map, for the auth events)."""
        room = await self.proc.room(self.room_id)
        assert room is not None
        if prev is None:
            prev = list(room.extremities)
        if state is None:
            state = {k: v[0] for k, v in room.state.items()}
        if auth is None:
            keys = auth_types_for_event(self.rv, etype, sender, state_key, content)
            auth = [state[k] for k in sorted(keys) if k in state]
        if depth is None:
            depths = []
            for p in prev:
                ev = await self.proc._event(p)
                depths.append(ev.depth if ev is not None else 0)
            depth = max(depths, default=0) + 1
        self._ts += 1
        return build_event(self.rv, type=etype, sender=sender, room_id=self.room_id, content=content,
                           prev_events=prev, auth_events=auth, depth=depth,
                           origin_server_ts=ts if ts is not None else self._ts, server_name=self.server,
                           signing_key=self.key, state_key=state_key)

    async def join(self, user: str, **kw: Any) -> Event:
        return await self.event("m.room.member", user, {"membership": "join"}, state_key=user, **kw)

    async def message(self, user: str, body: str = "hello", **kw: Any) -> Event:
        return await self.event("m.room.message", user, {"msgtype": "m.text", "body": body}, **kw)


async def make_room(proc: RoomInputProcessor, room_id: str, creator: str = "@alice:test.local",
                    version: str = "10", preset: str = "public_chat", create_pdu: dict[str, Any] | None = None,
                    **kw: Any) -> str:
    return await proc.create(CreateRoomRequest(creator=creator, room_version=version, preset=preset, **kw),
                             room_id, create_pdu)


async def receive(proc: RoomInputProcessor, origin: str, room_id: str, *events: Event | dict[str, Any]
                  ) -> dict[str, Any]:
    pdus = [e.pdu if isinstance(e, Event) else e for e in events]
    return await proc.federated.receive(origin, room_id, pdus)
