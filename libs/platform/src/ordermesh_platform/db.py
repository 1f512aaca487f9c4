"""Database plumbing: one URL picks PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    Table,
    TextClause,
    bindparam,
    delete,
    event,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

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


async def autovacuum_is_off(engine: AsyncEngine) -> bool:
    """True on a PostgreSQL server that never vacuums nor analyses its tables by itself.
    There the planner keeps the statistics of empty tables and dead rows pile up: a run
    went from about 150 to 48 orders/s by its 140,000th order, and back to 133 once the
    tables were vacuumed and analysed (docs/performance.md)."""
    if engine.dialect.name != "postgresql":
        return False
    async with engine.connect() as conn:
        return (await conn.execute(text("SHOW autovacuum"))).scalar() == "off"


async def vacuum_analyze(engine: AsyncEngine) -> None:
    """``VACUUM (ANALYZE)`` the whole database: what autovacuum does where it is on."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM (ANALYZE)"))


def create_engine(
    url: str | URL, pool_size: int = 10, statement_timeout_s: float | None = None
) -> AsyncEngine:
    """``statement_timeout_s`` (PostgreSQL): a statement unanswered by then fails, on the
    client, so a hung server is left too, and on the server (``statement_timeout``)."""
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
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
    if statement_timeout_s is not None:
        connect_args["command_timeout"] = statement_timeout_s
        connect_args["server_settings"] = {
            "statement_timeout": str(int(statement_timeout_s * 1000))
        }
    engine = _create_async_engine(
        parsed,
        pool_size=pool_size,
        # A fixed pool: callers beyond it wait for a connection. Overflow connections are
        # closed on their return, so bursts above the pool open and close connections all
        # the time (a server process forked, a handshake, every statement prepared anew).
        max_overflow=0,
        # No pre-ping: it costs a round trip per checkout. A connection found dead
        # fails its statement once, and a disconnect error invalidates the whole pool.
        # A dead server must fail a checkout quickly, not hang a request or a probe.
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "invalidate", _close_at_once)
    return engine


def _close_at_once(dbapi_connection: Any, _record: Any, _error: BaseException | None) -> None:
    """A connection given up (a disconnect, a statement cut off by a timeout or a
    cancelled call) is closed at once. SQLAlchemy would first ask the server to close it,
    waiting up to 2 s: on a hung server each cancelled call, each failed health probe,
    then held its caller 2 s past its timeout."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and not driver.is_closed():
        driver.terminate()


def count_statements(engine: AsyncEngine, service: str) -> None:
    """Count every statement the engine sends (``ordermesh_db_statements_total``): what
    a batch shares shows as statements per order. Transaction control is counted too,
    where it is sent: a connection in autocommit (reads, one-statement units of work)
    still has SQLAlchemy's begin, commit and rollback events, but the driver sends no
    BEGIN, COMMIT or ROLLBACK for them."""
    from ordermesh_platform.metrics import DB_STATEMENTS

    counter = DB_STATEMENTS.labels(service)

    def sent(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            counter.inc()

    event.listen(engine.sync_engine, "before_cursor_execute", lambda *_, **__: counter.inc())
    for name in ("begin", "commit", "rollback"):
        event.listen(engine.sync_engine, name, sent)


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
    its block ends (rolls back on an error), ``()`` for reads (outside a transaction on
    PostgreSQL, rolled back at the end on SQLite). The stores run Core statements on
    the connection itself: the ORM session adds about 0.9 ms of CPU per transaction
    (docs/performance.md) and they use none of its features.

    With ``timeout_s``, a unit of work still open after that long, or after what is
    left of the current call's deadline (``deadlines``) if that is shorter, is cut off:
    rolled back (nothing of it is written) and raised as ``TimeoutError``, which callers
    see as ``UNAVAILABLE``. A hung database so fails calls fast instead of holding them
    to their deadline. A call's deadline never cuts a unit of work below
    ``MIN_CALL_BUDGET_S``: what a call started is better finished than left to
    recovery because its caller stopped waiting."""

    MIN_CALL_BUDGET_S = 1.0

    def __init__(self, engine: AsyncEngine, timeout_s: float | None = None) -> None:
        self.engine = engine
        postgres = engine.dialect.name == "postgresql"
        # PostgreSQL only: an SQLite statement runs in a thread a timeout cannot stop, and
        # a local file does not hang the way a server does.
        self.timeout_s = timeout_s if postgres else None
        # Reads on PostgreSQL run without BEGIN and ROLLBACK, two round trips each: under
        # READ COMMITTED every statement takes its own snapshot inside a transaction
        # too, so a read sees the same either way. (Reads that lock go in ``begin()``.)
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else engine

    def __call__(self) -> AbstractAsyncContextManager[AsyncConnection]:
        if self.timeout_s is None:
            return self._reads.connect()
        return self._bounded(self._reads.connect())

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        if self.timeout_s is None:
            return self.engine.begin()
        return self._bounded(self.engine.begin())

    def single_statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for a unit of work that writes in one statement: on PostgreSQL
        outside a transaction (the statement commits by itself), on SQLite in one."""
        if self._reads is self.engine:
            return self.begin()
        return self()

    def budget_s(self) -> float | None:
        """How long a unit of work started now may take."""
        from ordermesh_platform.deadlines import remaining_s

        left = remaining_s()
        if left is None or self.timeout_s is None:
            return self.timeout_s
        return min(self.timeout_s, max(left, self.MIN_CALL_BUDGET_S))

    @asynccontextmanager
    async def _bounded(
        self, unit: AbstractAsyncContextManager[AsyncConnection]
    ) -> AsyncIterator[AsyncConnection]:
        async with asyncio.timeout(self.budget_s()), unit as conn:
            yield conn


async def delete_in_chunks(
    transactions: Transactions, table: Table, where: ColumnElement[bool], chunk: int = 5_000
) -> int:
    """Delete the rows ``where`` picks, ``chunk`` rows a transaction, until none is
    left; how many went. A retention sweep: one statement over a day of rows would hold
    its locks, and its write-ahead log, for as long as it takes, beside the hot path."""
    key = tuple_(*table.primary_key.columns)
    doomed = select(*table.primary_key.columns).where(where).limit(chunk)
    swept = 0
    while True:
        async with transactions.begin() as conn:
            result = await conn.execute(delete(table).where(key.in_(doomed)))
        deleted = result.rowcount or 0
        swept += deleted
        if deleted < chunk:
            return swept


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
        parsed.set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=None,
        connect_args={"timeout": CONNECT_TIMEOUT_S},  # asyncpg's own default is 60 s
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


async def insert_new(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    update: Sequence[str] = (),
) -> int:
    """``INSERT`` the rows (all with the same keys); a row whose ``conflict`` columns
    match an existing row is skipped, or, when ``update`` names columns, overwrites
    those columns of it. Returns how many rows were written.

    Both dialects spell ``ON CONFLICT`` alike. SQLAlchemy 2.0's dialect ``insert``
    constructs have no cache key, so they were compiled again on every execution
    (2 to 10% of each service's CPU, docs/performance.md); this text statement, with
    the columns' types on its binds, is built once per shape and cached like any
    other. Columns left out get their Python-side defaults, as a Core insert does.
    """
    if not rows:
        return 0
    statement, defaults = _insert_statement(
        table, tuple(rows[0]), tuple(conflict), tuple(update), len(rows), ()
    )
    params: dict[str, Any] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            params[f"{key}_{i}"] = value
        for key, make in defaults:
            params[f"{key}_{i}"] = make()
    result = await conn.execute(statement, params)
    return int(result.rowcount)


@functools.cache
def _insert_statement(
    table: Table,
    keys: tuple[str, ...],
    conflict: tuple[str, ...],
    update: tuple[str, ...],
    count: int,
    returning: tuple[str, ...],
) -> tuple[TextClause, tuple[tuple[str, Callable[[], Any]], ...]]:
    defaults = defaults_of(table, keys)
    columns = keys + tuple(key for key, _ in defaults)
    values = ", ".join(
        "(" + ", ".join(f":{key}_{i}" for key in columns) + ")" for i in range(count)
    )
    action = (
        "DO UPDATE SET " + ", ".join(f"{key} = excluded.{key}" for key in update)
        if update
        else "DO NOTHING"
    )
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values}"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) {action}"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    binds = [
        bindparam(f"{key}_{i}", type_=table.c[key].type) for i in range(count) for key in columns
    ]
    return text(sql).bindparams(*binds), defaults


def _default_maker(column: Column[Any]) -> Callable[[], Any]:
    default = column.default
    if not isinstance(default, ScalarElementColumnDefault | CallableColumnDefault):
        raise TypeError(f"{column}: only scalar and callable defaults are filled in")
    if isinstance(default, CallableColumnDefault):
        # SQLAlchemy has wrapped it to take an execution context; none of ours reads it.
        return functools.partial(cast(Callable[[Any], Any], default.arg), None)
    value = default.arg
    return lambda: value


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


# -- set-based statements: one statement for a whole batch of rows ---------------------
#
# PostgreSQL takes one array parameter per column (``unnest``): one statement text for
# every batch size (prepared once), and no limit on rows from the number of binds.
# SQLite has no arrays: rows go as one multi-row VALUES (inserts) or one statement per
# row in the same transaction (updates), which in-process costs little.

SQLITE_MAX_BINDS = 32_000


def one_of(
    column: ColumnElement[Any], name: str, postgres: bool, values: Sequence[Any] | None = None
) -> ColumnElement[bool]:
    """``column`` is one of the values bound to ``name`` (or ``values``).

    PostgreSQL takes them as one array parameter, read as a set,
    ``IN (SELECT unnest(:name))``: one statement text (prepared once) for any count, and
    each value looked up in the index, or the set hashed once. ``= ANY(:name)`` is one
    text too, but prepared it gets a generic plan after five runs, and where that plan
    scans a table it compares each row with every value: 13 ms of the server's CPU for
    250 values in 2,000 rows. SQLite: ``IN`` with one bind per value."""
    if postgres:
        array = bindparam(name, values, type_=ARRAY(column.type))
        return column.in_(select(func.unnest(array)))
    return column.in_(bindparam(name, values, expanding=True))


def _pg_type(table: Table, key: str) -> str:
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    return str(table.c[key].type.compile(dialect=PGDialect_asyncpg()))  # type: ignore[no-untyped-call]


def unnest_arrays(
    table: Table, columns: Sequence[str], column_of: Callable[[str], str], prefix: str = ""
) -> str:
    """``unnest(...) AS v(columns)`` over one array bind per column (``:<prefix><key>``),
    each cast to the array of its table column's type (``column_of(key)``)."""
    arrays = ", ".join(
        f"CAST(:{prefix}{key} AS {_pg_type(table, column_of(key))}[])" for key in columns
    )
    return f"unnest({arrays}) AS v({', '.join(columns)})"


@functools.cache
def _insert_rows_pg(
    table: Table,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    update: tuple[str, ...],
    returning: tuple[str, ...],
) -> TextClause:
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(f'v.{c}' for c in columns)} FROM {unnest_arrays(table, columns, str)}"
    )
    if conflict:
        action = (
            "DO UPDATE SET " + ", ".join(f"{key} = excluded.{key}" for key in update)
            if update
            else "DO NOTHING"
        )
        sql += f" ON CONFLICT ({', '.join(conflict)}) {action}"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return text(sql)


def defaults_of(table: Table, keys: Sequence[str]) -> tuple[tuple[str, Callable[[], Any]], ...]:
    """The columns left out of ``keys`` that have a Python-side default, with its maker:
    an insert fills them as a Core insert would."""
    return tuple(
        (c.key, _default_maker(c))
        for c in table.columns
        if c.key not in keys and c.default is not None and not c.primary_key
    )


async def insert_rows(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str] = (),
    returning: Sequence[str] = (),
    update: Sequence[str] = (),
) -> list[Any]:
    """One ``INSERT`` of many rows (all with the same keys). With ``conflict``, a row
    whose conflict columns match an existing row (or an earlier row of the same batch)
    is skipped; with ``update`` too, the existing row takes the row's values of those
    columns instead (an upsert: the batch's conflict keys must then be distinct).
    Returns the ``returning`` columns of the rows written."""
    if not rows:
        return []
    keys = tuple(rows[0])
    defaults = defaults_of(table, keys)
    if conn.dialect.name != "postgresql":
        found: list[Any] = []
        per_chunk = max(1, SQLITE_MAX_BINDS // (len(keys) + len(defaults)))
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start : start + per_chunk]
            statement, _ = _insert_statement(
                table, keys, tuple(conflict), tuple(update), len(chunk), tuple(returning)
            )
            params: dict[str, Any] = {}
            for i, row in enumerate(chunk):
                for key, value in row.items():
                    params[f"{key}_{i}"] = value
                for key, make in defaults:
                    params[f"{key}_{i}"] = make()
            result = await conn.execute(statement, params)
            if returning:
                found.extend(result.all())
        return found
    columns = keys + tuple(key for key, _ in defaults)
    arrays: dict[str, list[Any]] = {key: [row[key] for row in rows] for key in keys}
    for key, make in defaults:
        arrays[key] = [make() for _ in rows]
    result = await conn.execute(
        _insert_rows_pg(table, columns, tuple(conflict), tuple(update), tuple(returning)), arrays
    )
    return list(result.all()) if returning else []


def update_column(key: str) -> str:
    for prefix in ("b_", "add_"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def update_parts(table: Table, keys: Sequence[str], value: Callable[[str], str]) -> tuple[str, str]:
    sets = []
    where = []
    for key in keys:
        column = update_column(key)
        if key.startswith("b_"):
            where.append(f"{table.name}.{column} = {value(key)}")
        elif key.startswith("add_"):
            sets.append(f"{column} = {table.name}.{column} + {value(key)}")
        else:
            sets.append(f"{column} = {value(key)}")
    return ", ".join(sets), " AND ".join(where)


@functools.cache
def _update_rows_statement(
    table: Table, keys: tuple[str, ...], returning: tuple[str, ...], postgres: bool
) -> TextClause:
    if postgres:
        sets, where = update_parts(table, keys, lambda key: f"v.{key}")
        sql = (
            f"UPDATE {table.name} SET {sets} FROM {unnest_arrays(table, keys, update_column)} "
            f"WHERE {where}"
        )
    else:
        sets, where = update_parts(table, keys, lambda key: f":{key}")
        sql = f"UPDATE {table.name} SET {sets} WHERE {where}"
    if returning:
        sql += " RETURNING " + ", ".join(f"{table.name}.{c}" for c in returning)
    if postgres:
        return text(sql)
    return text(sql).bindparams(
        *(bindparam(key, type_=table.c[update_column(key)].type) for key in keys)
    )


async def update_rows(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[str] = (),
) -> list[Any]:
    """Update many rows in one statement (PostgreSQL: ``UPDATE ... FROM unnest``).

    Each row's keys say what to do with a column: ``b_<column>`` must equal the value
    for the row to change (the key, a version), ``add_<column>`` is added to it, any
    other key is its new value. Returns the ``returning`` columns of the rows changed:
    a row left out matched nothing (a stale version, a missing key)."""
    if not rows:
        return []
    keys = tuple(rows[0])
    postgres = conn.dialect.name == "postgresql"
    statement = _update_rows_statement(table, keys, tuple(returning), postgres)
    if postgres:
        result = await conn.execute(statement, {key: [row[key] for row in rows] for key in keys})
        return list(result.all()) if returning else []
    found: list[Any] = []
    for row in rows:
        result = await conn.execute(statement, dict(row))
        if returning:
            found.extend(result.all())
    return found
