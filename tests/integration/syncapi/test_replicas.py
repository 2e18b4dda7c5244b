"""Two syncapi replicas on one PostgreSQL schema: a write projected by one wakes the
other's long-poll (LISTEN/NOTIFY) and the other serves it."""
from __future__ import annotations

import asyncio
import os
import time
import uuid

import asyncpg
import pytest

from libs.config.model import DatabaseConfig, HomeserverConfig
from libs.storage import open_database
from services.syncapi.broadcast import apply_payload
from services.syncapi.service import SyncService
from services.syncapi.storage.store import MIGRATIONS_PACKAGE
from services.syncapi.streams import Notifier, Positions, parse_token
from services.syncapi.sync import SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, FakeRoomserver, FakeUserAPI

A, B = "@alice:test.local", "@bob:test.local"
PG = os.environ.get("AXON_TEST_POSTGRES")


def test_malformed_announcements_are_ignored() -> None:
    pos, notifier = Positions(), Notifier()
    for bad in ("", "{", "[]", '{"s": "nope", "p": 1, "k": []}', '{"s": "events", "p": "1", "k": []}'):
        assert apply_payload(bad, pos, notifier) is False
    assert apply_payload('{"s": "events", "p": 7, "k": ["r:x"]}', pos, notifier) is True
    assert pos.events == 7


@pytest.mark.postgres
async def test_second_replica_wakes_and_serves() -> None:
    if not PG:
        pytest.skip("AXON_TEST_POSTGRES not set")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    cfg = DatabaseConfig(kind="postgres", postgres_dsn=PG, postgres_schema_prefix=prefix)
    db1 = await open_database(cfg, "syncapi", MIGRATIONS_PACKAGE)
    db2 = await open_database(cfg, "syncapi", MIGRATIONS_PACKAGE)
    ua = FakeUserAPI()

    async def auth(_r):  # routes are not exercised here
        raise AssertionError

    s1 = SyncService(HomeserverConfig(), db1, None, roomserver=FakeRoomserver(), userapi=ua, auth=auth)  # type: ignore[arg-type]
    s2 = SyncService(HomeserverConfig(), db2, None, roomserver=FakeRoomserver(), userapi=ua, auth=auth)  # type: ignore[arg-type]
    await s1.start()
    await s2.start()
    try:
        room = FakeRoom("!rep:test.local")
        for rec in room.create(A) + [room.join(B)]:
            await s1.projector.on_output(rec)
        for _ in range(100):
            if s2.positions.events == s1.positions.events:
                break
            await asyncio.sleep(0.01)
        first, _ = await s2.engine.build(SyncRequest(B, "D"))
        assert room.room_id in first["rooms"]["join"]
        poll = asyncio.create_task(s2.engine.sync(SyncRequest(B, "D", since=parse_token(first["next_batch"]),
                                                              timeout_ms=10_000)))
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        await s1.projector.on_output(room.msg(A, "cross-replica"))
        resp = await asyncio.wait_for(poll, 5)
        assert time.perf_counter() - t0 < 1.0
        evs = resp["rooms"]["join"][room.room_id]["timeline"]["events"]
        assert [e["content"]["body"] for e in evs] == ["cross-replica"]
    finally:
        await s1.stop()
        await s2.stop()
        await db1.close()
        await db2.close()
        conn = await asyncpg.connect(PG)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}syncapi" CASCADE')
        await conn.close()


async def test_ready_only_once_the_projection_consumer_is_assigned(tmp_path) -> None:
    from libs.log.embedded import EmbeddedLog

    db = await open_database(DatabaseConfig(kind="sqlite", sqlite_dir=str(tmp_path / "db")), "syncapi",
                             MIGRATIONS_PACKAGE)
    lg = EmbeddedLog(str(tmp_path / "log.sqlite3"), fsync=False)
    await lg.start()

    async def auth(_r):  # routes are not exercised here
        raise AssertionError

    svc = SyncService(HomeserverConfig(), db, lg, roomserver=FakeRoomserver(), userapi=FakeUserAPI(), auth=auth)  # type: ignore[arg-type]
    try:
        assert [await c() for c in svc.readiness_checks] == [True, False]  # DB up, nothing assigned yet
        await svc.start()
        for _ in range(200):
            if all([await c() for c in svc.readiness_checks]):
                break
            await asyncio.sleep(0.01)
        assert all([await c() for c in svc.readiness_checks])
        await svc.stop()
        assert not await svc.readiness_checks[1]()
    finally:
        await svc.stop()
        await lg.stop()
        await db.close()
