"""Database plumbing: one URL picks PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 2.0


def normalize_url(url: str | URL) -> URL:
    """Accept postgres://, postgresql:// and sqlite:/// and pick the async drivers."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database {backend!r}: use PostgreSQL or SQLite")


def is_sqlite(url: str | URL) -> bool:
    return normalize_url(url).get_backend_name() == "sqlite"


def create_engine(url: str | URL, pool_size: int = 10) -> AsyncEngine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = _create_async_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    return _create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout. A connection found dead
        # fails its statement once, and a disconnect error invalidates the whole pool.
        # A dead server must fail a checkout quickly, not hang a request or a probe.
        connect_args={"timeout": CONNECT_TIMEOUT_S},
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout queues writers instead of failing.
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock when the transaction starts: a read that later upgrades to a
    # write could otherwise fail with "database is locked" instead of waiting its turn.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Transactions:
    """Units of work on one engine: ``begin()`` for a transaction that commits when
    its block ends (rolls back on an error), ``()`` for reads (rolled back at the
    end). The stores run Core statements on the connection itself: the ORM session
    adds about 0.9 ms of CPU per transaction (docs/performance.md) and they use
    none of its features."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def __call__(self) -> AsyncConnection:
        return self.engine.connect()

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.begin()


async def ping(engine: AsyncEngine, timeout_s: float) -> bool:
    """True when the database answers ``SELECT 1`` within the timeout."""
    from ordermesh_platform.telemetry import untraced

    try:
        with untraced():
            async with asyncio.timeout(timeout_s), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def ensure_database(url: str | URL) -> None:
    """Create the database named in the URL when it does not exist (PostgreSQL), or
    the folder of the file (SQLite)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return
    name = parsed.database
    if not name:
        raise ValueError("the PostgreSQL URL names no database")
    admin = _create_async_engine(
        parsed.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=None
    )
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(name)
                try:
                    await conn.execute(text(f"CREATE DATABASE {quoted}"))
                except Exception:
                    # Another process created it between our check and our CREATE.
                    if not await conn.scalar(
                        text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                    ):
                        raise
    finally:
        await admin.dispose()


def dialect_insert(dialect_name: str) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the dialect in use (both spell it alike)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def is_connection_error(error: BaseException) -> bool:
    """A failure to reach the database (down, restarting, pool exhausted, refusing
    connections), as opposed to a statement the database refused."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    # asyncpg raises its own errors from a pool's connect, unwrapped; SQLAlchemy's
    # wrapped ones carry the driver's as their cause: look at both.
    seen: BaseException | None = error
    for _ in range(3):
        if seen is None:
            break
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(
            seen, OperationalError | InterfaceError | PoolTimeout | ConnectionError | TimeoutError
        ) or _refused_by_postgres(seen):
            return True
        seen = seen.__cause__
    return False


def _refused_by_postgres(error: BaseException) -> bool:
    """PostgreSQL turning a connection away: too many clients or out of resources,
    starting up, shutting down, or a connection-class (08) error."""
    from asyncpg import exceptions as pg

    return isinstance(
        error,
        pg.InsufficientResourcesError
        | pg.CannotConnectNowError
        | pg.AdminShutdownError
        | pg.CrashShutdownError
        | pg.PostgresConnectionError,
    )
