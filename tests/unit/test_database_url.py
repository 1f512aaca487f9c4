"""One database URL setting picks the async driver; other databases are refused."""

from __future__ import annotations

import pytest

from ordermesh_platform.db import normalize_url


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("sqlite:///x.db", "sqlite+aiosqlite"),
    ],
)
def test_one_url_setting_picks_the_async_driver(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://u@h/db")
