"""Versioned SQL migrations per service.

Files live in a package, e.g. ``services/roomserver/storage/migrations/`` (pass
``"services.roomserver.storage.migrations"``), named ``NNN_description.sql``
(``001_initial.sql``, ``002_add_x.sql``). They are applied in version order,
each recorded in the service's ``schema_migrations`` table; already-applied
versions are skipped. All pending migrations run in ONE transaction, so a failing
migration leaves the schema as it was. ``{{TEMPLATE}}`` type markers are
rendered per dialect (libs/storage/sql.py). Several replicas may open the same
database at once: PostgreSQL serializes them with a transaction-level advisory
lock, SQLite with ``BEGIN IMMEDIATE``.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

import asyncpg

from libs.storage.errors import MigrationError
from libs.storage.sql import render_ddl, split_script

_NAME_RE = re.compile(r"^(\d+)_([A-Za-z0-9_\-]+)\.sql$")

_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover_migrations(package: str) -> list[Migration]:
    """Read ``NNN_name.sql`` files from a package, sorted by version."""
    try:
        root = resources.files(package)
    except (ModuleNotFoundError, TypeError) as e:
        raise MigrationError(f"migrations package {package!r} not found") from e
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _NAME_RE.match(entry.name)
        if not m:
            raise MigrationError(f"bad migration file name {entry.name!r} (want NNN_name.sql)")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"duplicate migration version {version} in {package}")
        found[version] = Migration(version, m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _lock_key(schema: str) -> int:
    # A stable signed 64-bit advisory lock key per schema.
    digest = hashlib.sha256(f"axon-migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate_postgres(pool: asyncpg.Pool, schema: str, migrations: list[Migration]) -> list[int]:
    """Create the schema if needed and apply pending migrations; returns versions applied."""
    # Imported here: postgres.py does not depend on this module.
    from libs.storage.postgres import _PG_ERRORS, translate_pg_error

    try:
        return await _migrate_postgres(pool, schema, migrations)
    except _PG_ERRORS as e:
        raise translate_pg_error(e) from e


async def _migrate_postgres(pool: asyncpg.Pool, schema: str, migrations: list[Migration]) -> list[int]:
    applied_now: list[int] = []
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(_CREATE_TABLE)
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for mig in migrations:
                if mig.version in done:
                    continue
                try:
                    await conn.execute(render_ddl(mig.sql, "postgres"))
                except asyncpg.PostgresError as e:
                    raise MigrationError(f"migration {mig.version}_{mig.name} failed: {e}") from e
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    mig.version, mig.name, int(time.time() * 1000),
                )
                applied_now.append(mig.version)
    return applied_now


def migrate_sqlite_sync(conn: sqlite3.Connection, migrations: list[Migration]) -> list[int]:
    """Apply pending migrations on a sqlite3 connection (run on its worker thread)."""
    applied_now: list[int] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_TABLE)
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for mig in migrations:
            if mig.version in done:
                continue
            for stmt in split_script(render_ddl(mig.sql, "sqlite")):
                try:
                    conn.execute(stmt)
                except sqlite3.Error as e:
                    raise MigrationError(
                        f"migration {mig.version}_{mig.name} failed: {e}"
                    ) from e
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, int(time.time() * 1000)),
            )
            applied_now.append(mig.version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied_now
