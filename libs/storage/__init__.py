"""Storage: one `Database` interface, PostgreSQL (asyncpg) and SQLite adapters.

    db = await open_database(config.database, "roomserver",
                             "services.roomserver.storage.migrations")
    await db.execute("INSERT INTO t (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = $2", k, v)
    row = await db.fetchrow("SELECT v FROM t WHERE k = $1", k)   # row["v"] or row[0]
    async with db.transaction() as tx:
        await tx.execute(...)

Each service has its own PostgreSQL schema (``<postgres_schema_prefix><service>``,
``search_path`` set on every pooled connection) or its own SQLite file
(``<sqlite_dir>/<service>.db``). See docs/architecture.md, "libs/storage".
"""
from __future__ import annotations

import os
import re

from libs.config.model import DatabaseConfig
from libs.storage.base import Connection, Database, Row
from libs.storage.errors import (
    DatabaseError,
    DatabaseUnavailable,
    IntegrityError,
    MigrationError,
    UniqueViolation,
)
from libs.storage.migrations import Migration, discover_migrations, migrate_postgres, migrate_sqlite_sync
from libs.storage.postgres import PostgresDatabase
from libs.storage.sqlite import SqliteDatabase

__all__ = [
    "Connection",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "IntegrityError",
    "Migration",
    "MigrationError",
    "PostgresDatabase",
    "Row",
    "SqliteDatabase",
    "UniqueViolation",
    "discover_migrations",
    "open_database",
]

_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def open_database(
    config: DatabaseConfig, service: str, migrations_package: str | None = None
) -> Database:
    """Open the service's database and apply its pending migrations.

    Raises DatabaseUnavailable if PostgreSQL cannot be reached (callers retry),
    MigrationError if a migration is malformed or fails."""
    migrations = discover_migrations(migrations_package) if migrations_package else []
    if config.kind == "postgres":
        schema = f"{config.postgres_schema_prefix}{service}"
        if not _IDENT_RE.match(schema):
            raise ValueError(f"invalid schema name {schema!r} (lowercase letters, digits, _)")
        db = await PostgresDatabase.connect(
            config.postgres_dsn,
            service,
            schema,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            connect_timeout_s=config.connect_timeout_s,
            statement_timeout_s=config.statement_timeout_s,
        )
        try:
            await migrate_postgres(db.pool, schema, migrations)
        except BaseException:
            await db.close()
            raise
        return db
    if config.kind == "sqlite":
        if not _IDENT_RE.match(service):
            raise ValueError(f"invalid service name {service!r}")
        path = (
            ":memory:"
            if config.sqlite_dir == ":memory:"
            else os.path.join(config.sqlite_dir, f"{service}.db")
        )
        sdb = SqliteDatabase(path, service, busy_timeout_ms=config.sqlite_busy_timeout_ms,
                             synchronous=config.sqlite_synchronous)
        await sdb.open()
        try:
            await sdb._writer.call(lambda c: migrate_sqlite_sync(c, migrations))
        except BaseException:
            await sdb.close()
            raise
        return sdb
    raise ValueError(f"unknown database kind {config.kind!r} (sqlite|postgres)")
