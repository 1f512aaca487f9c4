from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ordermesh_platform.db import normalize_url
from ordermesh_platform.errors import InvalidArgument, Validator
from ordermesh_platform.money import is_currency
from ordermesh_platform.paging import Cursor, decode_token, encode_token, page_size


def test_page_token_round_trips() -> None:
    cursor = Cursor(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "abc")
    assert decode_token(Validator(), encode_token(cursor)) == cursor


@pytest.mark.parametrize("token", ["garbage", "e30=", "!!!", "eyJ0IjogMX0="])
def test_a_forged_page_token_is_a_field_violation(token: str) -> None:
    v = Validator()
    assert decode_token(v, token) is None
    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_invalid()
    assert raised.value.violations[0].field == "page_token"


def test_page_size_defaults_and_bounds() -> None:
    v = Validator()
    assert page_size(v, 0) == 20
    assert page_size(v, 100) == 100
    page_size(v, 101)
    page_size(v, -1)
    assert len(v.violations) == 2


def test_currencies_are_iso_4217() -> None:
    assert is_currency("EUR")
    assert is_currency("JPY")
    assert not is_currency("eur")
    assert not is_currency("XAU")
    assert not is_currency("")


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
