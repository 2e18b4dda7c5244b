"""PostgreSQL adapter (asyncpg pool), one schema per service.

Every pooled connection has ``search_path`` set to the service's schema, so
queries name tables unqualified, exactly as on SQLite. Connection failures,
server shutdowns and connect timeouts surface as `DatabaseUnavailable`; the pool
reconnects by itself once the server is back.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from libs.storage.base import Row
from libs.storage.errors import (
    DatabaseError,
    DatabaseUnavailable,
    IntegrityError,
    UniqueViolation,
)

T = TypeVar("T")

# SQLSTATE classes meaning "the server is not there for you right now":
# 08 connection exception, 53 insufficient resources, 57P admin/crash shutdown.
_UNAVAILABLE_PREFIXES = ("08", "53", "57P")


_PG_ERRORS = (
    asyncpg.PostgresError,
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def translate_pg_error(exc: BaseException) -> BaseException:
    """Map an asyncpg/OS exception to the storage error classes."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(exc))
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(str(exc))
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        if state.startswith(_UNAVAILABLE_PREFIXES):
            return DatabaseUnavailable(f"{type(exc).__name__}: {exc}")
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    if isinstance(
        exc,
        (
            OSError,  # ConnectionRefusedError, ConnectionResetError, ...
            asyncio.TimeoutError,
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.InterfaceError,  # "pool is closing", connection lost mid-query
            # A connection the server closed while idle in the pool can fail the
            # next query with a protocol-state error; the pool then replaces it.
            asyncpg.InternalClientError,
        ),
    ):
        return DatabaseUnavailable(f"{type(exc).__name__}: {exc}")
    return exc


async def _guard(aw: Awaitable[T]) -> T:
    try:
        return await aw
    except _PG_ERRORS as e:
        raise translate_pg_error(e) from e


class PgConnection:
    """One acquired connection (used for transactions)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await _guard(self._conn.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await _guard(self._conn.executemany(sql, list(rows)))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await _guard(self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await _guard(self._conn.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await _guard(self._conn.fetchval(sql, *args))


class PostgresDatabase:
    """`Database` over an asyncpg pool bound to one schema."""

    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool, service: str, schema: str) -> None:
        self._pool = pool
        self.service = service
        self.schema = schema

    @classmethod
    async def connect(
        cls,
        dsn: str,
        service: str,
        schema: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 30.0,
    ) -> PostgresDatabase:
        settings = {"search_path": f'"{schema}"', "application_name": f"axon-{service}"[:63]}
        if statement_timeout_s > 0:
            settings["statement_timeout"] = str(int(statement_timeout_s * 1000))
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                server_settings=settings,
            )
        except _PG_ERRORS as e:
            raise translate_pg_error(e) from e
        return cls(pool, service, schema)

    async def _with_conn(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async def run() -> T:
            async with self._pool.acquire() as conn:
                return await fn(conn)

        return await _guard(run())

    async def execute(self, sql: str, *args: Any) -> None:
        await self._with_conn(lambda c: c.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        data = list(rows)
        await self._with_conn(lambda c: c.executemany(sql, data))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._with_conn(lambda c: c.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._with_conn(lambda c: c.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._with_conn(lambda c: c.fetchval(sql, *args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgConnection]:
        try:
            conn = await self._pool.acquire()
        except _PG_ERRORS as e:
            raise translate_pg_error(e) from e
        try:
            tr = conn.transaction()
            await _guard(tr.start())
            try:
                yield PgConnection(conn)
            except BaseException:
                try:
                    await _guard(tr.rollback())
                except DatabaseUnavailable:
                    pass  # the server already dropped the transaction with the connection
                raise
            else:
                await _guard(tr.commit())
        finally:
            await self._pool.release(conn)

    async def ping(self) -> None:
        await self.fetchval("SELECT 1")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except (asyncio.TimeoutError, OSError, asyncpg.InterfaceError):
            self._pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        """The raw pool, for PostgreSQL-only features (LISTEN/NOTIFY)."""
        return self._pool
