from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.connections import ConnectionWatch
from tests.support.postgres import SERVER_URL, database_url, drop_database, unique_name
from tests.support.receivers import smtp_server

__all__ = ["smtp_server"]  # a real SMTP server, for the notification tests

_connections = ConnectionWatch(SERVER_URL)


def pytest_sessionstart(session: pytest.Session) -> None:
    _connections.start()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _connections.stop()
    terminalreporter.write_line(_connections.summary())


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database URL; dropped afterwards."""
    name = unique_name("omtest")
    yield database_url(name)
    await drop_database(name)


@pytest.fixture(params=["postgresql", "sqlite"])
async def any_database(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    """The same test on the real PostgreSQL and on SQLite (the embedded default)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/service.db"
        return
    name = unique_name("omtest")
    yield database_url(name)
    await drop_database(name)
