"""Which errors say "the database (or broker) cannot be used", and the one line that
says so (ordermesh_platform.dependencies, ordermesh_messaging.reachability)."""

from __future__ import annotations

import socket

import pytest
from aiokafka.errors import KafkaConnectionError
from asyncpg import exceptions as pg
from sqlalchemy.exc import DBAPIError, IntegrityError

from ordermesh_messaging.reachability import describe, kafka_failure
from ordermesh_platform.dependencies import database_failure, redacted_url

URL = "postgresql://shop:s3cret@db.internal:5432/ordermesh_order"


def _wrapped(cause: BaseException) -> DBAPIError:
    """As SQLAlchemy raises a driver error: the driver's error as cause."""
    try:
        try:
            raise cause
        except BaseException as error:
            raise DBAPIError("SELECT 1", None, Exception(str(error))) from error
    except DBAPIError as wrapped:
        return wrapped


def test_a_url_is_shown_without_its_password() -> None:
    assert redacted_url(URL) == "postgresql://shop:***@db.internal:5432/ordermesh_order"
    assert redacted_url("postgresql://shop@db/x") == "postgresql://shop@db/x"
    assert "s3cret" not in redacted_url("not a url s3cret")


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "does not resolve"),
        (TimeoutError(), "no answer in time"),
        (pg.InvalidAuthorizationSpecificationError('role "shop" does not exist'), "role"),
        (pg.InvalidPasswordError('password authentication failed for user "shop"'), "password"),
        (pg.InvalidCatalogNameError('database "x" does not exist'), "does not exist"),
        (pg.TooManyConnectionsError("sorry, too many clients already"), "too many clients"),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, BaseException) else "",
)
def test_a_database_out_of_reach_is_one_line_naming_it_where_and_why(
    error: BaseException, cause: str
) -> None:
    for raised in (error, _wrapped(error)):
        failure = database_failure(raised, URL, "order")
        assert failure is not None
        line = str(failure)
        assert line.startswith(
            "order: cannot use PostgreSQL at postgresql://shop:***@db.internal:5432/"
        )
        assert cause in line
        assert "s3cret" not in line
        assert "\n" not in line


@pytest.mark.parametrize(
    "error",
    [
        pg.UniqueViolationError("duplicate key value violates unique constraint"),
        IntegrityError("INSERT", None, Exception("duplicate key")),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_statement_refused_or_a_bug_is_not_a_dependency_failure(error: BaseException) -> None:
    assert database_failure(error, URL) is None


def test_a_sqlite_file_that_cannot_be_opened_names_sqlite() -> None:
    import sqlite3

    failure = database_failure(
        sqlite3.OperationalError("unable to open database file"), "sqlite:////nowhere/x.db"
    )
    assert (
        str(failure) == "cannot use SQLite at sqlite:////nowhere/x.db: unable to open database file"
    )
    assert database_failure(sqlite3.OperationalError("no such table: orders"), "sqlite://") is None


def test_a_broker_out_of_reach_is_one_line_naming_kafka() -> None:
    failure = kafka_failure(KafkaConnectionError("Unable to bootstrap"), "broker-1:9092", "order")
    assert str(failure) == (
        "order: cannot use Kafka at broker-1:9092: no broker answered "
        "(is it running, on that port?)"
    )
    assert kafka_failure(ValueError("a bug"), "broker-1:9092") is None


def test_a_relay_or_consumer_log_line_names_kafka_when_it_is_out_of_reach() -> None:
    assert describe(KafkaConnectionError("Unable to bootstrap"), "broker-1:9092") == (
        "cannot use Kafka at broker-1:9092: no broker answered (is it running, on that port?)"
    )
    assert describe(ValueError("a bug"), "broker-1:9092") == "ValueError('a bug')"
