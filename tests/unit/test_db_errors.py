"""Which database errors count as "the database is away" (UNAVAILABLE, and a consumer
that waits) rather than a statement refused (a bug or bad data)."""

from __future__ import annotations

import pytest
from asyncpg import exceptions as pg
from sqlalchemy.exc import DBAPIError, IntegrityError

from ordermesh_platform.db import is_connection_error


def _wrapped(cause: BaseException) -> DBAPIError:
    """As SQLAlchemy raises a driver error met on a statement: the driver's error as cause."""
    try:
        try:
            raise cause
        except BaseException as error:
            raise DBAPIError("SELECT 1", None, Exception(str(error))) from error
    except DBAPIError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "error",
    [
        pg.TooManyConnectionsError("sorry, too many clients already"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_database_that_turns_connections_away_is_a_connection_error(
    error: BaseException,
) -> None:
    assert is_connection_error(error)
    assert is_connection_error(_wrapped(error))


@pytest.mark.parametrize(
    "error",
    [
        pg.UniqueViolationError("duplicate key value violates unique constraint"),
        pg.QueryCanceledError("canceling statement due to statement timeout"),
        IntegrityError("INSERT", None, Exception("duplicate key")),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_statement_the_database_refused_is_not(error: BaseException) -> None:
    assert not is_connection_error(error)
    assert not is_connection_error(_wrapped(error))
