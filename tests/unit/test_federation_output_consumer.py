"""Which servers the federationapi's roomserver.output consumer sends our events to."""
from __future__ import annotations

import json
from typing import Any

from libs.log.api import Record
from services.federationapi.consumers import OutputConsumer


class FakeRoomserver:
    async def get_joined_members(self, room_id: str) -> list[str]:
        return ["@alice:us.test", "@bob:joined.test"]


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[set[str], dict[str, Any]]] = []

    async def enqueue_pdu(self, servers: set[str], pdu: dict[str, Any]) -> None:
        self.sent.append((set(servers), pdu))


def _record(event: dict[str, Any]) -> Record:
    value = json.dumps({"event": event, "room_version": "10"}).encode()
    return Record(topic="roomserver.output", partition=0, offset=0, key=event["room_id"], value=value)


def _member(target: str, membership: str, signed_by: list[str]) -> dict[str, Any]:
    return {"type": "m.room.member", "state_key": target, "sender": "@alice:us.test", "room_id": "!r:us.test",
            "content": {"membership": membership}, "event_id": "$e",
            "signatures": {s: {"ed25519:k": "sig"} for s in signed_by}}


async def test_invite_goes_only_to_joined_servers_kick_also_to_target() -> None:
    queue = RecordingQueue()
    notified: list[dict[str, Any]] = []

    async def notifier(version: str, pdu: dict[str, Any]) -> None:
        notified.append(pdu)

    consumer = OutputConsumer("us.test", None, FakeRoomserver(), queue, invite_notifier=notifier)  # type: ignore[arg-type]
    # An invite the invitee's server already signed (PUT /invite done): not /sent to it.
    await consumer.handle(_record(_member("@carol:invited.test", "invite", ["us.test", "invited.test"])))
    assert [s for s, _ in queue.sent] == [{"joined.test"}]
    assert notified == []
    # A kick of a remote user reaches the kicked user's server too.
    await consumer.handle(_record(_member("@dave:kicked.test", "leave", ["us.test"])))
    assert queue.sent[-1][0] == {"joined.test", "kicked.test"}
    assert "event_id" not in queue.sent[-1][1]
