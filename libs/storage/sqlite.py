"""SQLite adapter: one file per service, WAL, synchronous=FULL or NORMAL (configurable).

Each connection lives on its own dedicated thread (a one-worker executor), so a
statement costs one thread hop and the event loop never blocks on disk. There is
one writer connection (all writes and transactions, serialized by an asyncio
lock, so tasks never see "database is locked") and one read-only reader
connection for standalone SELECTs (WAL lets it read while a write is in progress;
it sees only committed data). A transaction's BEGIN travels in the same hop as
its first statement, and statements without results (`execute`, `executemany`)
inside a transaction are deferred and sent along with the next statement that
returns rows, or with COMMIT: a transaction costs one thread hop per result it
needs, not one per statement. An error in a deferred statement surfaces from that
later call (or from the commit); either way the transaction fails as a whole.
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from libs.storage.base import Row
from libs.storage.errors import (
    DatabaseError,
    DatabaseUnavailable,
    IntegrityError,
    UniqueViolation,
)
from libs.storage.sql import is_read_only, to_sqlite_placeholders

T = TypeVar("T")

# Declared BOOLEAN columns come back as bool, like PostgreSQL. (sqlite3 keeps
# converters in a module-level table; registering the same one twice is harmless.)
sqlite3.register_converter("BOOLEAN", lambda b: b not in (b"0", b""))

# NORMAL in WAL mode survives kill -9 (commits are in the OS page cache when COMMIT
# returns) but not power loss; FULL fsyncs every commit.
SYNCHRONOUS_MODES = ("NORMAL", "FULL")

_UNIQUE_CODES = {2067, 1555}  # SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
_UNAVAILABLE_CODES = {5, 6, 10, 13, 14, 26}  # BUSY, LOCKED, IOERR, FULL, CANTOPEN, NOTADB


def translate_sqlite_error(exc: BaseException) -> BaseException:
    """Map a sqlite3 exception to the storage error classes."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.IntegrityError):
        msg = str(exc)
        if code in _UNIQUE_CODES or "UNIQUE constraint" in msg:
            return UniqueViolation(msg)
        return IntegrityError(msg)
    if isinstance(exc, sqlite3.OperationalError) and (
        (code is not None and (code & 0xFF) in _UNAVAILABLE_CODES)
        or "database is locked" in str(exc)
        or "unable to open" in str(exc)
    ):
        return DatabaseUnavailable(str(exc))
    if isinstance(exc, sqlite3.Error):
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    return exc


class _Worker:
    """A sqlite3 connection bound to one thread."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()

        def run() -> T:
            assert self.conn is not None
            return fn(self.conn)

        try:
            return await loop.run_in_executor(self._executor, run)
        except sqlite3.Error as e:
            raise translate_sqlite_error(e) from e

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        loop = asyncio.get_running_loop()

        def run() -> None:
            self.conn = connect()

        try:
            await loop.run_in_executor(self._executor, run)
        except sqlite3.Error as e:
            raise translate_sqlite_error(e) from e

    async def close(self) -> None:
        loop = asyncio.get_running_loop()

        def run() -> None:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

        await loop.run_in_executor(self._executor, run)
        self._executor.shutdown(wait=False)


# ---- statement helpers, run on the worker thread ------------------------------
def _exec(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> None:
    conn.execute(sql, args).close()


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    cur = conn.execute(sql, args)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _fetchrow(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Row | None:
    cur = conn.execute(sql, args)
    try:
        # (An INSERT/UPDATE ... RETURNING makes all its changes on the first step.)
        return cur.fetchone()
    finally:
        cur.close()


def _fetchval(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Any:
    row = _fetchrow(conn, sql, args)
    return None if row is None else row[0]


def _execmany(conn: sqlite3.Connection, sql: str, rows: list[Sequence[Any]]) -> None:
    conn.executemany(sql, rows).close()


# Holds the SqliteDatabase whose write transaction the current task is in.
_in_transaction: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "axon_sqlite_tx", default=None
)


class SqliteTransaction:
    """The connection-like object yielded by `SqliteDatabase.transaction()`."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self._begun = False
        # Statements without results, not yet sent (see module docstring).
        self._pending: list[Callable[[sqlite3.Connection], None]] = []

    def _with_pending(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        if not self._pending:
            return fn
        pending, self._pending = self._pending, []

        def run(conn: sqlite3.Connection) -> T:
            for stmt in pending:
                stmt(conn)
            return fn(conn)

        return run

    def _wrap(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        if self._begun:
            return fn
        self._begun = True

        def with_begin(conn: sqlite3.Connection) -> T:
            # BEGIN IMMEDIATE takes the file's write lock now, so the
            # transaction can never fail half-way on a lock upgrade.
            conn.execute("BEGIN IMMEDIATE")
            return fn(conn)

        return with_begin

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        wrapped = self._wrap(self._with_pending(fn))
        try:
            return await self._worker.call(wrapped)
        except BaseException:
            # If BEGIN itself failed, there is nothing to roll back.
            if not self._in_tx():
                self._begun = False
            raise

    def _in_tx(self) -> bool:
        conn = self._worker.conn
        return conn is not None and conn.in_transaction

    async def execute(self, sql: str, *args: Any) -> None:
        q = to_sqlite_placeholders(sql)
        self._pending.append(lambda c: _exec(c, q, args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        q, data = to_sqlite_placeholders(sql), list(rows)
        if data:
            self._pending.append(lambda c: _execmany(c, q, data))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        q = to_sqlite_placeholders(sql)
        return await self._call(lambda c: _fetch(c, q, args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        q = to_sqlite_placeholders(sql)
        return await self._call(lambda c: _fetchrow(c, q, args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        q = to_sqlite_placeholders(sql)
        return await self._call(lambda c: _fetchval(c, q, args))

    async def _finish(self, commit: bool) -> None:
        if not commit:
            self._pending = []
        if not self._begun and not self._pending:
            return

        def run(conn: sqlite3.Connection) -> None:
            if conn.in_transaction:
                conn.execute("COMMIT" if commit else "ROLLBACK")

        if commit:
            # Deferred statements and COMMIT in one hop.
            await self._worker.call(self._wrap(self._with_pending(run)))
        else:
            await self._worker.call(run)


class SqliteDatabase:
    """`Database` on one SQLite file (see module docstring)."""

    dialect = "sqlite"

    def __init__(self, path: str, service: str, busy_timeout_ms: int = 5000,
                 synchronous: str = "FULL") -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"sqlite synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.path = path
        self.service = service
        self._busy_timeout_ms = busy_timeout_ms
        self._writer = _Worker(f"sqlite-w-{service}")
        self._reader: _Worker | None = None
        self._write_lock = asyncio.Lock()
        self._closed = False

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # created on the worker thread, used only there
            detect_types=sqlite3.PARSE_DECLTYPES,
            timeout=self._busy_timeout_ms / 1000,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
        return conn

    async def open(self) -> None:
        if self.path != ":memory:":
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            except OSError as e:
                raise DatabaseUnavailable(f"cannot create database directory: {e}") from e
        await self._writer.open(lambda: self._connect(readonly=False))
        if self.path != ":memory:":
            # An in-memory database exists only on its one connection.
            self._reader = _Worker(f"sqlite-r-{self.service}")
            await self._reader.open(lambda: self._connect(readonly=True))

    def _check_not_in_tx(self) -> None:
        if _in_transaction.get() is self:
            raise RuntimeError(
                "write through the Database while this task holds a SQLite transaction: "
                "use the transaction's connection (it would deadlock otherwise)"
            )

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise DatabaseUnavailable("database is closed")
        self._check_not_in_tx()
        async with self._write_lock:
            return await self._writer.call(fn)

    async def _read_or_write(self, sql: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is not None and is_read_only(sql):
            if self._closed:
                raise DatabaseUnavailable("database is closed")
            return await self._reader.call(fn)
        return await self._write(fn)

    async def execute(self, sql: str, *args: Any) -> None:
        q = to_sqlite_placeholders(sql)
        await self._write(lambda c: _exec(c, q, args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        q, data = to_sqlite_placeholders(sql), list(rows)

        def run(conn: sqlite3.Connection) -> None:
            # One transaction for the batch: one fsync instead of one per row.
            conn.execute("BEGIN IMMEDIATE")
            try:
                _execmany(conn, q, data)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._write(run)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        q = to_sqlite_placeholders(sql)
        return await self._read_or_write(sql, lambda c: _fetch(c, q, args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        q = to_sqlite_placeholders(sql)
        return await self._read_or_write(sql, lambda c: _fetchrow(c, q, args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        q = to_sqlite_placeholders(sql)
        return await self._read_or_write(sql, lambda c: _fetchval(c, q, args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        if self._closed:
            raise DatabaseUnavailable("database is closed")
        self._check_not_in_tx()
        async with self._write_lock:
            tx = SqliteTransaction(self._writer)
            token = _in_transaction.set(self)
            try:
                yield tx
            except BaseException:
                # Shielded: the ROLLBACK is queued on the writer thread ahead of
                # anything the next lock holder submits, even if we are cancelled.
                await asyncio.shield(tx._finish(commit=False))
                raise
            else:
                try:
                    await tx._finish(commit=True)
                except BaseException:
                    await asyncio.shield(tx._finish(commit=False))
                    raise
            finally:
                _in_transaction.reset(token)

    async def ping(self) -> None:
        await self._writer.call(lambda c: c.execute("SELECT 1").close())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            await self._writer.close()
        if self._reader is not None:
            await self._reader.close()
