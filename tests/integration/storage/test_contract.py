"""The storage contract: the same tests against SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import json

import pytest

from libs.config import DatabaseConfig
from libs.storage import (
    Database,
    DatabaseUnavailable,
    IntegrityError,
    MigrationError,
    UniqueViolation,
    open_database,
)

from .conftest import ADAPTERS, PG_DSN


async def test_crud_and_row_access(db: Database) -> None:
    await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "a", "1")
    await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "b", "2")
    row = await db.fetchrow("SELECT k, v FROM kv WHERE k = $1", "a")
    assert row is not None
    assert row["k"] == "a" and row[1] == "1" and len(row) == 2
    assert dict(row) == {"k": "a", "v": "1"}
    assert tuple(row) == ("a", "1")
    await db.execute("UPDATE kv SET v = $1 WHERE k = $2", "9", "a")
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "a") == "9"
    await db.execute("DELETE FROM kv WHERE k = $1", "b")
    rows = await db.fetch("SELECT k FROM kv WHERE k <> $1 ORDER BY k", "migrated")
    assert [r["k"] for r in rows] == ["a"]
    assert await db.fetchrow("SELECT k FROM kv WHERE k = $1", "nope") is None
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "nope") is None


async def test_placeholders_reused_out_of_order_and_in_strings(db: Database) -> None:
    # $2 before $1, $1 twice, and a literal '$1' that must stay text.
    await db.execute(
        "INSERT INTO kv (k, v) VALUES ($2, $1 || '$1' || $1)", "x", "key"
    )
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "key") == "x$1x"
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE k = $1 OR k = $1", "key") == 1


async def test_upsert_do_update_and_do_nothing(db: Database) -> None:
    q = "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
    await db.execute(q, "u", "1")
    await db.execute(q, "u", "2")
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "u") == "2"
    await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT DO NOTHING", "u", "3")
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "u") == "2"
    # DO NOTHING + RETURNING gives no row on conflict: the "already existed" idiom.
    got = await db.fetchrow(
        "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING k", "u", "4"
    )
    assert got is None


async def test_returning_generated_ids_increase(db: Database) -> None:
    ids = [
        await db.fetchval("INSERT INTO items (name) VALUES ($1) RETURNING id", f"n{i}")
        for i in range(5)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 5 and all(isinstance(i, int) for i in ids)
    rows = await db.fetch(
        "UPDATE items SET count = count + 1 WHERE id <= $1 RETURNING id, count", ids[1]
    )
    assert sorted((r["id"], r["count"]) for r in rows) == [(ids[0], 1), (ids[1], 1)]


async def test_type_round_trips(db: Database) -> None:
    doc = {"body": "héllo \u2603", "n": [1, 2, {"x": None}]}
    blob = bytes(range(256)) + b"\x00\x00"
    big = 2**62 + 12345
    await db.execute(
        "INSERT INTO items (name, count, flag, data, doc, ratio) VALUES ($1, $2, $3, $4, $5, $6)",
        "t", big, True, blob, json.dumps(doc), 0.25,
    )
    await db.execute(
        "INSERT INTO items (name, count, flag, data, doc, ratio) VALUES ($1, $2, $3, $4, $5, $6)",
        "f", -big, False, b"", None, None,
    )
    t = await db.fetchrow("SELECT count, flag, data, doc, ratio FROM items WHERE name = $1", "t")
    assert t is not None
    assert t["count"] == big and t["flag"] is True and t["data"] == blob
    assert json.loads(t["doc"]) == doc and t["ratio"] == 0.25
    f = await db.fetchrow("SELECT count, flag, data, doc FROM items WHERE name = $1", "f")
    assert f is not None
    assert f["count"] == -big and f["flag"] is False and f["data"] == b"" and f["doc"] is None
    assert await db.fetchval("SELECT COUNT(*) FROM items WHERE flag = $1", True) == 1
    # Text with NUL-free unicode and SQL metacharacters goes through untouched.
    tricky = "Robert'); DROP TABLE kv;-- \U0001F600"
    await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", tricky, tricky)
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", tricky) == tricky


async def test_executemany(db: Database) -> None:
    await db.executemany(
        "INSERT INTO kv (k, v) VALUES ($1, $2)", [(f"many{i}", str(i)) for i in range(100)]
    )
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE k LIKE $1", "many%") == 100


async def test_executemany_is_all_or_nothing(db: Database) -> None:
    with pytest.raises(UniqueViolation):
        await db.executemany("INSERT INTO kv (k, v) VALUES ($1, $2)", [("d1", "a"), ("d1", "b")])
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE k = $1", "d1") == 0


async def test_transaction_commit(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "t1", "a")
        new_id = await tx.fetchval("INSERT INTO items (name) VALUES ($1) RETURNING id", "t1")
        # The transaction sees its own writes.
        assert await tx.fetchval("SELECT v FROM kv WHERE k = $1", "t1") == "a"
        await tx.executemany("INSERT INTO kv (k, v) VALUES ($1, $2)", [("t2", "b"), ("t3", "c")])
        rows = await tx.fetch("SELECT k FROM kv WHERE k LIKE $1 ORDER BY k", "t%")
        assert [r[0] for r in rows] == ["t1", "t2", "t3"]
        assert (await tx.fetchrow("SELECT name FROM items WHERE id = $1", new_id))["name"] == "t1"
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE k LIKE $1", "t%") == 3


async def test_transaction_rollback_on_exception(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "r1", "a")
            await tx.execute("INSERT INTO items (name) VALUES ($1)", "r1")
            raise Boom()
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE k = $1", "r1") == 0
    assert await db.fetchval("SELECT COUNT(*) FROM items WHERE name = $1", "r1") == 0
    # The database is usable afterwards.
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "r2", "b")
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "r2") == "b"


async def test_uncommitted_writes_invisible_outside(db: Database) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "iso", "x")
            entered.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await entered.wait()
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE k = $1", "iso") == 0
    release.set()
    await task
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE k = $1", "iso") == 1


async def test_unique_violation_mapping(db: Database) -> None:
    await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "dup", "1")
    with pytest.raises(UniqueViolation):
        await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "dup", "2")
    with pytest.raises(UniqueViolation):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name) VALUES ($1)", "same")
            await tx.execute("INSERT INTO items (name) VALUES ($1)", "same")
    assert await db.fetchval("SELECT COUNT(*) FROM items WHERE name = $1", "same") == 0
    # NOT NULL is an IntegrityError but not a UniqueViolation.
    with pytest.raises(IntegrityError) as ei:
        await db.execute("INSERT INTO kv (k, v) VALUES ($1, NULL)", "nn")
    assert not isinstance(ei.value, UniqueViolation)


async def test_concurrent_writers(db: Database) -> None:
    """Many tasks write at once, in and out of transactions: no lock errors, no loss."""

    async def worker(n: int) -> None:
        for i in range(20):
            if i % 2:
                async with db.transaction() as tx:
                    cur = await tx.fetchval("SELECT v FROM kv WHERE k = $1", "counter")
                    await tx.execute(
                        "UPDATE kv SET v = $1 WHERE k = $2", str(int(cur) + 1), "counter"
                    )
            else:
                await db.execute(
                    "INSERT INTO items (name, count) VALUES ($1, $2)", f"w{n}-{i}", i
                )

    await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "counter", "0")
    await asyncio.gather(*(worker(n) for n in range(8)))
    assert await db.fetchval("SELECT COUNT(*) FROM items") == 8 * 10
    if db.dialect == "sqlite":
        # Writers are serialized, so even read-modify-write never loses an update.
        assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "counter") == "80"
    else:
        assert 1 <= int(await db.fetchval("SELECT v FROM kv WHERE k = $1", "counter")) <= 80


async def test_migrations_apply_once_and_in_order(open_db) -> None:
    db = await open_db(service="m")
    versions = await db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r[0], r[1]) for r in versions] == [(1, "initial"), (2, "order_log"), (3, "more")]
    steps = await db.fetch("SELECT step, note FROM order_log ORDER BY step")
    assert [tuple(r) for r in steps] == [
        (2, "second; with a semicolon in a string"),
        (3, "third"),
    ]
    await db.execute("INSERT INTO kv (k, v, extra) VALUES ($1, $2, $3)", "e", "v", "x")
    await db.close()
    # Re-opening applies nothing again (the INSERTs in 002/003 would collide).
    db2 = await open_db(service="m")
    assert await db2.fetchval("SELECT COUNT(*) FROM schema_migrations") == 3
    assert await db2.fetchval("SELECT COUNT(*) FROM order_log") == 3 - 1
    assert await db2.fetchval("SELECT extra FROM kv WHERE k = $1", "e") == "x"


async def test_concurrent_migration_from_two_openers(open_db) -> None:
    a, b = await asyncio.gather(open_db(service="cm"), open_db(service="cm"))
    for d in (a, b):
        assert await d.fetchval("SELECT COUNT(*) FROM schema_migrations") == 3
        assert await d.fetchval("SELECT COUNT(*) FROM order_log") == 2
    await a.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "shared", "1")
    assert await b.fetchval("SELECT v FROM kv WHERE k = $1", "shared") == "1"


async def test_failed_migration_rolls_back_everything(open_db) -> None:
    with pytest.raises(MigrationError):
        await open_db(service="bad", migrations="tests.integration.storage.mig_bad")
    db = await open_db(service="bad", migrations=None)
    # Neither 001 nor the first half of 002 was kept.
    assert await db.fetchval("SELECT COUNT(*) FROM schema_migrations") == 0
    with pytest.raises(Exception):
        await db.fetchval("SELECT COUNT(*) FROM good")


async def test_services_are_isolated(open_db) -> None:
    a = await open_db(service="alpha")
    b = await open_db(service="beta")
    await a.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "only-a", "1")
    assert await b.fetchval("SELECT COUNT(*) FROM kv WHERE k = $1", "only-a") == 0


async def test_ping(db: Database) -> None:
    await db.ping()


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_database_unavailable_when_unreachable(kind: str, tmp_path) -> None:
    if kind == "postgres":
        # Nothing listens on port 1; the connect must fail fast and typed.
        cfg = DatabaseConfig(
            kind="postgres",
            postgres_dsn="postgresql://postgres@127.0.0.1:1/nothing",
            connect_timeout_s=2,
        )
    else:
        blocker = tmp_path / "not_a_dir"
        blocker.write_text("a file where the database directory should be")
        cfg = DatabaseConfig(kind="sqlite", sqlite_dir=str(blocker / "sub"))
    with pytest.raises(DatabaseUnavailable):
        await open_database(cfg, "svc", None)


@pytest.mark.postgres
@pytest.mark.skipif(not PG_DSN, reason="AXON_TEST_POSTGRES not set")
async def test_postgres_connection_loss_is_unavailable_then_recovers(tmp_path) -> None:
    import asyncpg

    cfg = DatabaseConfig(
        kind="postgres", postgres_dsn=PG_DSN or "", postgres_schema_prefix="tloss_",
        pool_min_size=2, pool_max_size=2,
    )
    db = await open_database(cfg, "svc", None)
    admin = await asyncpg.connect(PG_DSN)
    try:
        assert await db.fetchval("SELECT 1") == 1
        # Kill every backend of this service, as a server restart would.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'axon-svc' AND pid <> pg_backend_pid()"
        )
        failures = 0
        for _ in range(3):
            try:
                await db.fetchval("SELECT 1")
            except DatabaseUnavailable:
                failures += 1
        assert failures >= 1
        # The pool reconnects on its own.
        assert await db.fetchval("SELECT 2") == 2
    finally:
        await db.close()
        await admin.execute('DROP SCHEMA IF EXISTS "tloss_svc" CASCADE')
        await admin.close()
