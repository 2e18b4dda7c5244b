"""services/federationapi/edus.py: EDU shapes and which records become EDUs for whom."""
from __future__ import annotations

import json
from typing import Any

from libs.log.api import Record
from services.federationapi.edus import (EDUSender, device_list_update_edu, federation_message_id,
                                         presence_edu, receipt_edu, to_device_edu, typing_edu)
from services.roomserver.api import RoomMembership
from services.userapi.api import Device

ROOM = "!r:us.test"


def test_builders_follow_the_spec_shapes() -> None:
    assert typing_edu(ROOM, "@a:us.test", True) == {"room_id": ROOM, "user_id": "@a:us.test", "typing": True}
    assert receipt_edu(ROOM, "@a:us.test", "$e", 7) == {
        ROOM: {"m.read": {"@a:us.test": {"event_ids": ["$e"], "data": {"ts": 7}}}}}
    assert receipt_edu(ROOM, "@a:us.test", "$e", 7, "$t")[ROOM]["m.read"]["@a:us.test"]["data"]["thread_id"] == "$t"
    p = presence_edu([{"user_id": "@a:us.test", "presence": "online", "status_msg": "hi", "last_active_ts": 900},
                      {"user_id": "@b:us.test", "presence": "offline", "status_msg": None, "last_active_ts": 2000}],
                     now_ms=1000)
    assert p == {"push": [
        {"user_id": "@a:us.test", "presence": "online", "last_active_ago": 100, "currently_active": True,
         "status_msg": "hi"},
        {"user_id": "@b:us.test", "presence": "offline", "last_active_ago": 0, "currently_active": False}]}
    assert to_device_edu("@a:us.test", "m.x", "m1", {"@b:r.test": {"D": {"k": 1}}}) == {
        "sender": "@a:us.test", "type": "m.x", "message_id": "m1", "messages": {"@b:r.test": {"D": {"k": 1}}}}
    d = device_list_update_edu("@a:us.test", "D", 5, [4], keys={"keys": {}, "unsigned": {"x": 1}}, display_name="P")
    assert d == {"user_id": "@a:us.test", "device_id": "D", "stream_id": 5, "prev_id": [4], "deleted": False,
                 "device_display_name": "P", "keys": {"keys": {}}}
    m = federation_message_id("@a:us.test|DEV|txn|@b:r.test|D")
    assert m == federation_message_id("@a:us.test|DEV|txn|@b:r.test|D") and "DEV" not in m and len(m) == 32


class FakeQueue:
    def __init__(self) -> None:
        self.edus: list[tuple[list[str], str, dict[str, Any]]] = []

    async def enqueue_edu(self, destinations: Any, edu_type: str, content: dict[str, Any]) -> None:
        self.edus.append((sorted(destinations), edu_type, content))


class FakeRoomserver:
    async def get_joined_members(self, room_id: str) -> list[str]:
        return ["@a:us.test", "@b:remote.test", "@c:other.test", "@d:remote.test"] if room_id == ROOM else []

    async def get_rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> list[RoomMembership]:
        return [RoomMembership(ROOM, user_id, "join", "$j")] if user_id == "@a:us.test" else []


class FakeUserapi:
    async def list_devices(self, user_id: str) -> list[Device]:
        return [Device(user_id, "D2", "phone"), Device(user_id, "D1", None)]

    async def query_keys(self, wanted: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        return {u: {"D1": {"device_id": "D1", "keys": {"ed25519:D1": "k"}}} for u in wanted}


def rec(topic: str, value: dict[str, Any], key: str = "k") -> Record:
    return Record(topic, 0, 0, key, json.dumps(value).encode())


async def test_sender_sends_only_our_users_edus_to_the_right_servers() -> None:
    q = FakeQueue()
    s = EDUSender("us.test", None, FakeRoomserver(), FakeUserapi(), q, clock_ms=lambda: 1000)  # type: ignore[arg-type]
    room_servers = ["other.test", "remote.test"]
    await s.handle(rec("ephemeral.typing", {"room_id": ROOM, "user_id": "@a:us.test", "typing": True}))
    await s.handle(rec("ephemeral.typing", {"room_id": ROOM, "user_id": "@b:remote.test", "typing": True}))
    assert q.edus == [(room_servers, "m.typing", typing_edu(ROOM, "@a:us.test", True))]
    q.edus.clear()
    await s.handle(rec("ephemeral.receipts", {"room_id": ROOM, "user_id": "@a:us.test", "receipt_type": "m.read",
                                              "event_id": "$e", "ts": 5, "thread_id": None}))
    await s.handle(rec("ephemeral.receipts", {"room_id": ROOM, "user_id": "@a:us.test",
                                              "receipt_type": "m.read.private", "event_id": "$e", "ts": 5}))
    assert q.edus == [(room_servers, "m.receipt", receipt_edu(ROOM, "@a:us.test", "$e", 5))]
    q.edus.clear()
    await s.handle(rec("user.presence", {"user_id": "@a:us.test", "presence": "online", "status_msg": None,
                                         "last_active_ts": 1000}))
    await s.handle(rec("user.presence", {"user_id": "@b:remote.test", "presence": "online"}))
    await s.handle(rec("user.presence", {"user_id": "@z:us.test", "presence": "online"}))   # shares no room
    assert [(d, t) for d, t, _ in q.edus] == [(room_servers, "m.presence")]
    q.edus.clear()
    td = {"sender": "@a:us.test", "type": "m.room_key", "user_id": "@b:remote.test", "device_id": "DB",
          "content": {"k": 1}, "message_id": "@a:us.test|D|t1|@b:remote.test|DB"}
    await s.handle(rec("user.to_device", td))
    await s.handle(rec("user.to_device", {**td, "user_id": "@l:us.test"}))              # local target
    await s.handle(rec("user.to_device", {**td, "sender": "@b:remote.test", "user_id": "@c:other.test"}))
    assert q.edus == [(["remote.test"], "m.direct_to_device", to_device_edu(
        "@a:us.test", "m.room_key", federation_message_id(td["message_id"]), {"@b:remote.test": {"DB": {"k": 1}}}))]
    q.edus.clear()
    await s.handle(rec("user.key_changes", {"user_id": "@a:us.test"}))
    await s.handle(rec("user.key_changes", {"user_id": "@b:remote.test"}))
    assert [(d, t) for d, t, _ in q.edus] == [(room_servers, "m.device_list_update")] * 2
    first, second = q.edus[0][2], q.edus[1][2]
    assert (first["device_id"], second["device_id"]) == ("D1", "D2")
    assert first["keys"]["keys"] == {"ed25519:D1": "k"} and "keys" not in second
    assert second["prev_id"] == [first["stream_id"]] and second["stream_id"] > first["stream_id"]
    # junk never raises
    await s.handle(Record("ephemeral.typing", 0, 0, "k", b"not json"))
    await s.handle(rec("ephemeral.typing", {"room_id": 5, "user_id": "@a:us.test", "typing": "yes"}))
    await s.handle(rec("user.to_device", {"sender": "@a:us.test", "user_id": "nobody"}))


class MemoryChainStore:
    def __init__(self) -> None:
        self.chains: dict[str, tuple[int, list[str]]] = {}

    async def get_device_list(self, user_id: str) -> tuple[int, list[str]] | None:
        return self.chains.get(user_id)

    async def set_device_list(self, user_id: str, stream_id: int, device_ids: list[str]) -> None:
        self.chains[user_id] = (stream_id, sorted(device_ids))


async def test_device_list_updates_chain_across_changes_and_announce_deletions() -> None:
    q, store, ua = FakeQueue(), MemoryChainStore(), FakeUserapi()
    s = EDUSender("us.test", None, FakeRoomserver(), ua, q, clock_ms=lambda: 1000,  # type: ignore[arg-type]
                  store=store)  # type: ignore[arg-type]
    await s.handle(rec("user.key_changes", {"user_id": "@a:us.test"}))
    first = [c for _, _, c in q.edus]
    assert [e["device_id"] for e in first] == ["D1", "D2"] and first[0]["prev_id"] == []
    assert store.chains["@a:us.test"] == (first[-1]["stream_id"], ["D1", "D2"])
    q.edus.clear()

    async def one_device(user_id: str) -> list[Device]:
        return [Device(user_id, "D1", None)]

    ua.list_devices = one_device  # type: ignore[method-assign]
    await s.handle(rec("user.key_changes", {"user_id": "@a:us.test"}))
    second = [c for _, _, c in q.edus]
    assert [(e["device_id"], e["deleted"]) for e in second] == [("D1", False), ("D2", True)]
    assert second[0]["prev_id"] == [first[-1]["stream_id"]]             # the chain goes on
    assert second[1]["prev_id"] == [second[0]["stream_id"]] and "keys" not in second[1]
    assert store.chains["@a:us.test"] == (second[-1]["stream_id"], ["D1"])
