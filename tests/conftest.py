from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from ordermesh_platform import telemetry
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


OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture
def otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set this test's OTLP endpoint ("": none). A process reads it once, so the cached
    value is dropped on the way in and out."""

    def set_endpoint(endpoint: str) -> None:
        for name in OTLP_ENDPOINT_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        if endpoint:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        telemetry.otlp_endpoint.cache_clear()

    yield set_endpoint
    telemetry.otlp_endpoint.cache_clear()
