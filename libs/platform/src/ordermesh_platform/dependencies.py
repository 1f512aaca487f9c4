"""A dependency that cannot be reached, or that turns us away, said in one line: which
service, which dependency, where (never with its password) and why.

A traceback of ``ConnectionRefusedError`` names neither PostgreSQL nor the URL it was
given; whoever meets such an error where the address is known turns it into a
:class:`DependencyUnavailable`, and the CLI prints that as it is."""

from __future__ import annotations

import socket
import sqlite3

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

POSTGRESQL = "PostgreSQL"
SQLITE = "SQLite"
KAFKA = "Kafka"


class DependencyUnavailable(Exception):
    """``<service>: cannot use <dependency> at <address>: <cause>``."""

    def __init__(self, dependency: str, address: str, cause: str, service: str = "") -> None:
        self.dependency = dependency
        self.address = address
        self.cause = cause
        self.service = service
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.service}: " if self.service else ""
        return f"{where}cannot use {self.dependency} at {self.address}: {self.cause}"


def redacted_url(url: str | URL) -> str:
    """The URL as it may be logged: its password, if any, as ``***``."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<a malformed database URL>"
    return parsed.render_as_string(hide_password=True)


def database_kind(url: str | URL) -> str:
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return POSTGRESQL
    return SQLITE if parsed.get_backend_name() == "sqlite" else POSTGRESQL


def database_failure(
    error: BaseException, url: str | URL, service: str = ""
) -> DependencyUnavailable | None:
    """``error`` as a :class:`DependencyUnavailable` when it says the database at ``url``
    cannot be reached or refused the login (no such role, database or password);
    None when it is anything else (a statement refused, a bug)."""
    cause = connection_cause(error)
    if cause is None:
        return None
    return DependencyUnavailable(database_kind(url), redacted_url(url), cause, service)


def connection_cause(error: BaseException) -> str | None:
    """Why a connection could not be made or was turned away, in a few words; None
    when ``error`` (or what caused it) is no such failure."""
    from asyncpg import exceptions as pg

    for seen in _chain(error):
        if isinstance(seen, socket.gaierror):
            return f"the host name does not resolve ({seen.strerror or seen})"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused (is the server running, on that port?)"
        if isinstance(seen, TimeoutError):
            return "no answer in time"
        if isinstance(
            seen,
            pg.InvalidAuthorizationSpecificationError  # no such role, or pg_hba refuses it
            | pg.InvalidPasswordError
            | pg.InvalidCatalogNameError  # no such database
            | pg.InsufficientResourcesError  # too many clients
            | pg.CannotConnectNowError  # starting up, shutting down
            | pg.AdminShutdownError
            | pg.PostgresConnectionError,  # class 08
        ):
            return _first_line(seen)
        if isinstance(seen, sqlite3.OperationalError) and "unable to open" in str(seen):
            return _first_line(seen)
        if isinstance(seen, OSError) and not isinstance(seen, pg.PostgresError):
            return _first_line(seen)
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """The error, what caused it, and the driver's error SQLAlchemy wraps."""
    found: list[BaseException] = []
    queue: list[object] = [error]
    while queue and len(found) < 8:
        seen = queue.pop(0)
        if not isinstance(seen, BaseException) or any(seen is x for x in found):
            continue
        found.append(seen)
        queue += [getattr(seen, "orig", None), seen.__cause__, seen.__context__]
    return found


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


async def reach_database(url: str | URL, service: str = "") -> None:
    """Raise :class:`DependencyUnavailable` unless the database server at ``url`` takes
    our login; creates the database the URL names when missing, as the migrations would.
    A URL without a database checks the server alone."""
    from sqlalchemy import text

    from ordermesh_platform.db import create_engine, ensure_database, normalize_url

    try:
        parsed = normalize_url(url)
        if parsed.database or parsed.get_backend_name() == "sqlite":
            await ensure_database(parsed)
        else:
            engine = create_engine(parsed.set(database="postgres"), 1)
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            finally:
                await engine.dispose()
    except Exception as error:
        failure = database_failure(error, url, service)
        if failure is None:
            raise
        raise failure from error
