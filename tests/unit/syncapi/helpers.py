"""Test helpers: real, signed events (libs.events.builder) wrapped in hand-made
OutputNewEvent records, and a syncapi wired to an SQLite database."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from libs.config.model import DatabaseConfig
from libs.events.builder import build_event
from libs.events.room_versions import get_room_version
from libs.events.signing import SigningKey
from libs.storage import Database, open_database
from services.roomserver.api import OutputNewEvent
from services.syncapi.activity import SyncActivity
from services.syncapi.consumers import SyncProjector
from services.syncapi.storage.store import MIGRATIONS_PACKAGE, SyncStore
from services.syncapi.streams import Notifier, Positions, TypingState
from services.syncapi.sync import SyncEngine

SERVER = "test.local"
KEY = SigningKey.from_seed(b"\x01" * 32, "t1")
_ts = itertools.count(1_700_000_000_000)


@dataclass
class FakeRoom:
    room_id: str
    version: str = "10"
    state: dict[tuple[str, str], str] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    last: list[str] = field(default_factory=list)
    depth: int = 0
    last_output: str | None = None

    def make(self, type_: str, sender: str, content: dict[str, Any], state_key: str | None = None,
             redacts: str | None = None) -> dict[str, Any]:
        rv = get_room_version(self.version)
        self.depth += 1
        auth = [self.state[k] for k in (("m.room.create", ""), ("m.room.power_levels", ""),
                                        ("m.room.member", sender)) if k in self.state]
        ev = build_event(rv, type=type_, sender=sender, room_id=self.room_id, content=content,
                         prev_events=self.last[-1:], auth_events=auth, depth=self.depth,
                         origin_server_ts=next(_ts), server_name=SERVER, signing_key=KEY,
                         state_key=state_key, redacts=redacts)
        pdu = dict(ev.pdu)
        pdu["event_id"] = ev.event_id
        return pdu

    def output(self, pdu: dict[str, Any], *, device_id: str | None = None, txn_id: str | None = None,
               soft_failed: bool = False) -> OutputNewEvent:
        eid = pdu["event_id"]
        self.events[eid] = pdu
        added: list[str] = []
        removed: list[str] = []
        if isinstance(pdu.get("state_key"), str) and not soft_failed:
            key = (pdu["type"], pdu["state_key"])
            old = self.state.get(key)
            if old:
                removed.append(old)
            self.state[key] = eid
            added.append(eid)
        if not soft_failed:
            self.last.append(eid)
        rec = OutputNewEvent(event=pdu, room_version=self.version, state_added=added, state_removed=removed,
                             soft_failed=soft_failed, device_id=device_id, txn_id=txn_id,
                             last_sent_event_id=self.last_output)
        self.last_output = eid
        return rec

    def send(self, type_: str, sender: str, content: dict[str, Any], state_key: str | None = None,
             **kw: Any) -> OutputNewEvent:
        redacts = kw.pop("redacts", None)
        return self.output(self.make(type_, sender, content, state_key, redacts=redacts), **kw)

    def create(self, creator: str) -> list[OutputNewEvent]:
        return [
            self.send("m.room.create", creator, {"creator": creator, "room_version": self.version}, ""),
            self.send("m.room.member", creator, {"membership": "join"}, creator),
            self.send("m.room.power_levels", creator, {"users": {creator: 100}}, ""),
            self.send("m.room.join_rules", creator, {"join_rule": "public"}, ""),
            self.send("m.room.history_visibility", creator, {"history_visibility": "shared"}, ""),
        ]

    def join(self, user: str) -> OutputNewEvent:
        return self.send("m.room.member", user, {"membership": "join"}, user)

    def msg(self, user: str, body: str, **kw: Any) -> OutputNewEvent:
        return self.send("m.room.message", user, {"msgtype": "m.text", "body": body}, **kw)


class FakeRoomserver:
    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.calls = 0

    async def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        self.calls += 1
        return {e: self.events[e] for e in event_ids if e in self.events}


class FakeDevice:
    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id, self.device_id = user_id, device_id


class FakeUserAPI:
    def __init__(self) -> None:
        self.tokens: dict[str, FakeDevice] = {}
        self.devices: dict[str, list[str]] = {}
        self.account_data: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.filters: dict[tuple[str, str], dict[str, Any]] = {}

    def add_user(self, user_id: str, device_id: str, token: str) -> None:
        self.tokens[token] = FakeDevice(user_id, device_id)
        self.devices.setdefault(user_id, []).append(device_id)

    async def query_access_token(self, token: str) -> FakeDevice | None:
        return self.tokens.get(token)

    async def list_devices(self, user_id: str) -> list[FakeDevice]:
        return [FakeDevice(user_id, d) for d in self.devices.get(user_id, [])]

    async def get_account_data(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        return self.account_data.get((user_id, room_id, data_type))

    async def get_filter(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        return self.filters.get((user_id, filter_id))

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        return {}


@dataclass
class Harness:
    db: Database
    store: SyncStore
    positions: Positions
    notifier: Notifier
    typing: TypingState
    projector: SyncProjector
    engine: SyncEngine
    roomserver: FakeRoomserver
    userapi: FakeUserAPI
    clock: list[int]


async def make_harness(db: Database) -> Harness:
    clock = [1_700_000_000_000]
    store = SyncStore(db)
    pos = await store.positions()
    positions = Positions(events=pos["events"], receipts=pos["receipts"], to_device=pos["to_device"],
                          account_data=pos["account_data"], device_lists=pos["device_lists"])
    notifier = Notifier()
    typing = TypingState(clock_ms=lambda: clock[0])
    rs, ua = FakeRoomserver(), FakeUserAPI()
    # One started activity tracker shared as in SyncService: the tests exercise the
    # in-memory incremental path (rooms with nothing new cost no query).
    activity = SyncActivity()
    activity.start(positions.events)
    projector = SyncProjector(store, positions, notifier, typing, rs, ua,  # type: ignore[arg-type]
                              activity=activity)
    engine = SyncEngine(store, positions, notifier, typing, clock_ms=lambda: clock[0], activity=activity)
    return Harness(db, store, positions, notifier, typing, projector, engine, rs, ua, clock)


async def sqlite_db(tmp_path: Any) -> Database:
    return await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path)), "syncapi",
                               MIGRATIONS_PACKAGE)
