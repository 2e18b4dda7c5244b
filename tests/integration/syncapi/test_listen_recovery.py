"""The cross-replica LISTEN connection dies (PostgreSQL restarted, connection cut):
the replica re-LISTENs by itself, re-reads the positions it missed and serves the
events announced while it was deaf; later announcements wake its long-polls again."""
from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest

from libs.config.model import DatabaseConfig, HomeserverConfig
from libs.storage import open_database
from services.syncapi.service import SyncService
from services.syncapi.storage.store import MIGRATIONS_PACKAGE
from services.syncapi.streams import parse_token
from services.syncapi.sync import SyncRequest
from tests.unit.syncapi.helpers import FakeRoom, FakeRoomserver, FakeUserAPI

A, B = "@alice:test.local", "@bob:test.local"
PG = os.environ.get("AXON_TEST_POSTGRES")


async def _until(cond, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < end:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return bool(cond())


@pytest.mark.postgres
async def test_lost_listen_connection_is_reestablished_and_resynced() -> None:
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
    admin = await asyncpg.connect(PG)
    try:
        room = FakeRoom("!relisten:test.local")
        for rec in room.create(A) + [room.join(B)]:
            await s1.projector.on_output(rec)
        assert await _until(lambda: s2.positions.events == s1.positions.events)
        first, _ = await s2.engine.build(SyncRequest(B, "D"))
        since = parse_token(first["next_batch"])
        # Replica 2 goes deaf (as while its connection is down), replica 1 writes meanwhile.
        lst = s2.position_listener
        await lst._conn.remove_listener(lst.channel, lst._on_notify)
        await s1.projector.on_output(room.msg(A, "while deaf"))
        await asyncio.sleep(0.2)
        assert s2.positions.events < s1.positions.events  # the announcement was missed
        # Its connection is cut from the server side: it must re-LISTEN and resync.
        pid = lst._conn.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        assert await _until(lambda: lst.reconnects == 1)
        assert lst._conn is not None and lst._conn.get_server_pid() != pid
        assert s2.positions.events == s1.positions.events
        resp = await s2.engine.sync(SyncRequest(B, "D", since=since, timeout_ms=0))
        evs = resp["rooms"]["join"][room.room_id]["timeline"]["events"]
        assert [e["content"]["body"] for e in evs] == ["while deaf"]
        # And announcements arrive again: a long-poll on replica 2 wakes for a write on 1.
        poll = asyncio.create_task(s2.engine.sync(SyncRequest(B, "D", since=parse_token(resp["next_batch"]),
                                                              timeout_ms=10_000)))
        await asyncio.sleep(0.05)
        await s1.projector.on_output(room.msg(A, "after"))
        resp2 = await asyncio.wait_for(poll, 5)
        evs = resp2["rooms"]["join"][room.room_id]["timeline"]["events"]
        assert [e["content"]["body"] for e in evs] == ["after"]
    finally:
        await admin.close()
        await s1.stop()
        await s2.stop()
        await db1.close()
        await db2.close()
        conn = await asyncpg.connect(PG)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}syncapi" CASCADE')
        await conn.close()
