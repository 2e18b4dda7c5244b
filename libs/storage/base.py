"""The `Database` interface every service codes against, and its row type.

Both adapters (libs/storage/postgres.py, libs/storage/sqlite.py) implement it.
SQL is written once, PostgreSQL style: ``$1, $2`` placeholders, ``ON CONFLICT ...
DO UPDATE/NOTHING``, ``RETURNING``; see libs/storage/sql.py for the subset.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Row(Protocol):
    """A result row: ``row["col"]``, ``row[0]``, ``len(row)``, ``dict(row)``.

    (asyncpg.Record for PostgreSQL, sqlite3.Row for SQLite; no copy is made.)"""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def keys(self) -> Any: ...


class Connection(Protocol):
    """Statement methods shared by a `Database` and an open transaction."""

    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Database(Connection, Protocol):
    """A service's database (its own PostgreSQL schema, or its own SQLite file).

    Statements outside `transaction()` autocommit individually. Inside
    ``async with db.transaction() as tx:`` use ``tx`` for every statement; all
    of them commit together, or roll back if the block raises. On SQLite,
    write transactions are serialized (one writer at a time), so keep them short
    and never await other I/O inside one; on SQLite a write through ``db`` while
    the same task holds a transaction raises RuntimeError instead of deadlocking.
    """

    dialect: str  # "postgres" | "sqlite"
    service: str

    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...
    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers (for /ready)."""
        ...
    async def close(self) -> None: ...
