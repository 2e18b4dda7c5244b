"""Outbound EDUs: what our users do that other servers must hear of, as EDUs on the
per-destination queue (`OutboundQueue.enqueue_edu`; a transaction carries ≤ 100).

`EDUSender` consumes (group `federationapi.edus`, shared by the replicas):

| topic | EDU | destinations |
|---|---|---|
| `ephemeral.typing` | `m.typing` | servers of the room's joined members |
| `ephemeral.receipts` | `m.receipt` (`m.read` only; private receipts stay here) | the same |
| `user.presence` | `m.presence` | servers sharing a joined room with the user |
| `user.to_device` | `m.direct_to_device` | the target user's server |
| `user.key_changes` | `m.device_list_update`: one per current device, and `deleted` for the devices gone since the last update | servers sharing a room |

Only records about our own users (the sender, for to-device) are sent: the inbound
side publishes remote users' EDUs on the same topics, and those must not echo back.
Device-list updates form one chain per user (`prev_id` = the previous update's
`stream_id`), persisted in `device_list_streams` with the device IDs last described, so
deletions are announced and `/user/devices` answers the same `stream_id` a remote saw last.
The builders are pure functions (unit-tested against the spec's shapes).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, Callable

from libs.log.api import EventLog, Record, TopicSpec
from libs.log.runner import KeyedRunner
from services.roomserver.api import RoomserverAPI
from services.syncapi.api import TOPIC_KEY_CHANGES, TOPIC_RECEIPTS, TOPIC_TO_DEVICE, TOPIC_TYPING
from services.userapi.api import TOPIC_PRESENCE, UserAPI

from .queue import OutboundQueue
from .storage.store import FederationStore

log = logging.getLogger(__name__)

EDU_TOPICS = (TOPIC_TYPING, TOPIC_RECEIPTS, TOPIC_PRESENCE, TOPIC_TO_DEVICE, TOPIC_KEY_CHANGES)


def _domain(user_id: Any) -> str | None:
    if isinstance(user_id, str) and user_id.startswith("@") and ":" in user_id:
        return user_id.split(":", 1)[1]
    return None


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---- builders (pure) -------------------------------------------------------------------

def typing_edu(room_id: str, user_id: str, typing: bool) -> dict[str, Any]:
    return {"room_id": room_id, "user_id": user_id, "typing": typing}


def receipt_edu(room_id: str, user_id: str, event_id: str, ts: int, thread_id: str | None = None
                ) -> dict[str, Any]:
    data: dict[str, Any] = {"ts": ts}
    if thread_id is not None:
        data["thread_id"] = thread_id
    return {room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": data}}}}


def presence_edu(records: list[dict[str, Any]], now_ms: int) -> dict[str, Any]:
    """`records`: the userapi's presence records (`user_id`, `presence`, `status_msg`,
    `last_active_ts`)."""
    push = []
    for r in records:
        item: dict[str, Any] = {"user_id": r["user_id"], "presence": r["presence"],
                                "last_active_ago": max(0, now_ms - int(r.get("last_active_ts") or now_ms)),
                                "currently_active": r["presence"] == "online"}
        if isinstance(r.get("status_msg"), str):
            item["status_msg"] = r["status_msg"]
        push.append(item)
    return {"push": push}


def federation_message_id(local_message_id: str) -> str:
    """A compact ID, stable across redelivery (receivers dedupe on (origin, message_id)),
    that does not reveal the local device and transaction IDs."""
    return hashlib.sha256(local_message_id.encode()).hexdigest()[:32]


def to_device_edu(sender: str, event_type: str, message_id: str,
                  messages: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"sender": sender, "type": event_type, "message_id": message_id, "messages": messages}


def device_list_update_edu(user_id: str, device_id: str, stream_id: int, prev_id: list[int], *,
                           deleted: bool = False, keys: dict[str, Any] | None = None,
                           display_name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"user_id": user_id, "device_id": device_id, "stream_id": stream_id,
                           "prev_id": prev_id, "deleted": deleted}
    if display_name is not None:
        out["device_display_name"] = display_name
    if keys:
        out["keys"] = {k: v for k, v in keys.items() if k != "unsigned"}
    return out


# ---- the consumer ------------------------------------------------------------------------

class EDUSender:
    def __init__(self, server_name: str, event_log: EventLog, roomserver: RoomserverAPI,
                 userapi: UserAPI | None, queue: OutboundQueue, *, group: str = "federationapi.edus",
                 clock_ms: Callable[[], int] = _now_ms, store: FederationStore | None = None) -> None:
        self.server_name = server_name
        self.log = event_log
        self.roomserver = roomserver
        self.userapi = userapi
        self.queue = queue
        self.group = group
        self.clock_ms = clock_ms
        self.store = store if store is not None else getattr(queue, "store", None)
        self.runner: KeyedRunner | None = None
        self._last_stream_id = 0

    async def start(self) -> None:
        await self.log.ensure_topics([TopicSpec(t, partitions=8) for t in EDU_TOPICS])
        self.runner = KeyedRunner(self.log.consumer(self.group, list(EDU_TOPICS)), self.handle, name=self.group)
        await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    def _ours(self, user_id: Any) -> bool:
        return _domain(user_id) == self.server_name

    async def room_servers(self, room_id: str) -> set[str]:
        servers = {d for d in map(_domain, await self.roomserver.get_joined_members(room_id)) if d}
        servers.discard(self.server_name)
        return servers

    async def servers_sharing_rooms(self, user_id: str) -> set[str]:
        servers: set[str] = set()
        for m in await self.roomserver.get_rooms_for_user(user_id):
            servers |= await self.room_servers(m.room_id)
        return servers

    async def handle(self, record: Record) -> None:
        try:
            rec = json.loads(record.value)
        except ValueError:
            return
        if not isinstance(rec, dict):
            return
        topic = record.topic
        if topic == TOPIC_TYPING:
            await self._typing(rec)
        elif topic == TOPIC_RECEIPTS:
            await self._receipt(rec)
        elif topic == TOPIC_PRESENCE:
            await self._presence(rec)
        elif topic == TOPIC_TO_DEVICE:
            await self._to_device(rec)
        elif topic == TOPIC_KEY_CHANGES:
            await self._key_change(rec)

    async def _typing(self, rec: dict[str, Any]) -> None:
        room_id, user_id, typing = rec.get("room_id"), rec.get("user_id"), rec.get("typing")
        if not self._ours(user_id) or not isinstance(room_id, str) or not isinstance(typing, bool):
            return
        servers = await self.room_servers(room_id)
        if servers:
            await self.queue.enqueue_edu(servers, "m.typing", typing_edu(room_id, user_id, typing))

    async def _receipt(self, rec: dict[str, Any]) -> None:
        room_id, user_id, event_id = rec.get("room_id"), rec.get("user_id"), rec.get("event_id")
        if rec.get("receipt_type") != "m.read" or not self._ours(user_id) or not isinstance(room_id, str) \
                or not isinstance(event_id, str):
            return
        ts = rec.get("ts") if isinstance(rec.get("ts"), int) else self.clock_ms()
        thread = rec.get("thread_id") if isinstance(rec.get("thread_id"), str) else None
        servers = await self.room_servers(room_id)
        if servers:
            await self.queue.enqueue_edu(servers, "m.receipt", receipt_edu(room_id, user_id, event_id, ts, thread))

    async def _presence(self, rec: dict[str, Any]) -> None:
        user_id = rec.get("user_id")
        if not self._ours(user_id) or rec.get("presence") not in ("online", "offline", "unavailable"):
            return
        servers = await self.servers_sharing_rooms(user_id)
        if servers:
            await self.queue.enqueue_edu(servers, "m.presence", presence_edu([rec], self.clock_ms()))

    async def _to_device(self, rec: dict[str, Any]) -> None:
        sender, target, device_id = rec.get("sender"), rec.get("user_id"), rec.get("device_id")
        content, typ, mid = rec.get("content"), rec.get("type"), rec.get("message_id")
        dest = _domain(target)
        if not self._ours(sender) or dest is None or dest == self.server_name or not isinstance(device_id, str) \
                or not isinstance(content, dict) or not isinstance(typ, str) or not isinstance(mid, str):
            return
        edu = to_device_edu(sender, typ, federation_message_id(mid), {target: {device_id: content}})
        await self.queue.enqueue_edu([dest], "m.direct_to_device", edu)

    def _next_stream_id(self, after: int) -> int:
        # Increasing (ms clock, bumped on ties and past the stored chain): receivers only
        # need "different when the list changed"; an unknown prev_id makes them resync.
        self._last_stream_id = max(self._last_stream_id + 1, after + 1, self.clock_ms())
        return self._last_stream_id

    async def _key_change(self, rec: dict[str, Any]) -> None:
        user_id = rec.get("user_id")
        if not self._ours(user_id) or self.userapi is None:
            return
        previous = await self.store.get_device_list(user_id) if self.store is not None else None
        last_sid, last_ids = previous if previous is not None else (0, [])
        devices = await self.userapi.list_devices(user_id)
        servers = await self.servers_sharing_rooms(user_id)
        if not servers:
            return  # nobody to tell; a remote that joins later resyncs via /user/devices
        keys = (await self.userapi.query_keys({user_id: []})).get(user_id, {})
        prev: list[int] = [last_sid] if previous is not None else []
        edus: list[dict[str, Any]] = []
        current = {d.device_id for d in devices}
        for d in sorted(devices, key=lambda d: d.device_id):
            sid = self._next_stream_id(last_sid)
            edus.append(device_list_update_edu(user_id, d.device_id, sid, prev, keys=keys.get(d.device_id),
                                               display_name=d.display_name))
            prev = [sid]
        for gone in sorted(set(last_ids) - current):
            sid = self._next_stream_id(last_sid)
            edus.append(device_list_update_edu(user_id, gone, sid, prev, deleted=True))
            prev = [sid]
        for edu in edus:
            await self.queue.enqueue_edu(servers, "m.device_list_update", edu)
        if self.store is not None and prev:
            await self.store.set_device_list(user_id, prev[0], sorted(current))
