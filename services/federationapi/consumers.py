"""Consumer of `roomserver.output`: queue our own new events for the remote servers in
the room (servers of the joined members in current state, plus the server of the
target of a membership event other than an invite, so a kicked server hears of it; an
invited server hears of its invite through PUT /invite)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from libs.events.room_versions import EventFormat, UnsupportedRoomVersion, get_room_version
from libs.log.api import EventLog, Record, TopicSpec
from libs.log.runner import KeyedRunner
from services.roomserver.api import TOPIC_OUTPUT, RoomserverAPI, decode_output_record

from .queue import OutboundQueue

log = logging.getLogger(__name__)


def _domain(user_id: Any) -> str | None:
    if isinstance(user_id, str) and user_id.startswith("@") and ":" in user_id:
        return user_id.split(":", 1)[1]
    return None


def federation_pdu(event: dict[str, Any], room_version: str) -> dict[str, Any] | None:
    """The PDU as it goes over federation: no local `unsigned` data, and no `event_id`
    for room versions whose IDs are hashes."""
    try:
        version = get_room_version(room_version)
    except UnsupportedRoomVersion:
        return None
    pdu = {k: v for k, v in event.items() if k != "unsigned"}
    if version.event_format is not EventFormat.V1:
        pdu.pop("event_id", None)
    return pdu


class OutputConsumer:
    def __init__(self, server_name: str, event_log: EventLog, roomserver: RoomserverAPI, queue: OutboundQueue,
                 group: str = "federationapi.output",
                 invite_notifier: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None) -> None:
        self.server_name = server_name
        self.log = event_log
        self.roomserver = roomserver
        self.queue = queue
        self.group = group
        self.runner: KeyedRunner | None = None
        # Invites made without the invitee's server (createRoom's `invite`, room upgrades):
        # `invite_notifier(room_version, pdu)` sends them through PUT /invite (best effort,
        # in the background so a slow server does not hold up the room's partition).
        self.invite_notifier = invite_notifier
        self._notifications: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.log.ensure_topics([TopicSpec(TOPIC_OUTPUT, partitions=8)])
        self.runner = KeyedRunner(self.log.consumer(self.group, [TOPIC_OUTPUT]), self.handle, name=self.group)
        await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        for task in list(self._notifications):
            task.cancel()
        self._notifications.clear()

    def _notify_invite(self, room_version: str, pdu: dict[str, Any], joined_servers: set[str]) -> None:
        target = _domain(pdu.get("state_key"))
        sigs = pdu.get("signatures")
        if (self.invite_notifier is None or target is None or target in joined_servers
                or (isinstance(sigs, dict) and target in sigs)):
            return  # their server is in the room (/send tells it), or already signed it (/invite done)

        async def run() -> None:
            try:
                await self.invite_notifier(room_version, pdu)  # type: ignore[misc]
            except Exception as e:
                log.warning("invite of %s to %s not delivered: %s", pdu.get("state_key"), pdu.get("room_id"), e)

        task = asyncio.create_task(run())
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def handle(self, record: Record) -> None:
        obj = decode_output_record(record.value)
        if obj is None:
            return
        event: dict[str, Any] = obj["event"]
        if _domain(event.get("sender")) != self.server_name:
            return  # only our own events are ours to send
        room_id = event.get("room_id")
        if not isinstance(room_id, str):
            return
        pdu = federation_pdu(event, str(obj.get("room_version", "")))
        if pdu is None:
            return
        servers = {d for d in map(_domain, await self.roomserver.get_joined_members(room_id)) if d}
        if event.get("type") == "m.room.member":
            target = _domain(event.get("state_key"))
            if (event.get("content") or {}).get("membership") == "invite":
                # An invitee's server hears of its invite through PUT /invite (done
                # before, or by the notifier), never through /send while none of its
                # users is joined: it does not know the room (SyTest's servers break).
                self._notify_invite(str(obj.get("room_version", "")), pdu, servers)
            elif target:
                servers.add(target)
        servers.discard(self.server_name)
        if servers:
            await self.queue.enqueue_pdu(servers, pdu)
