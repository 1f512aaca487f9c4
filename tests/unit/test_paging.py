"""Keyset paging (ordermesh_platform.paging): page tokens, page sizes, and the page a
List RPC answers with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ordermesh_platform.errors import InvalidArgument, Validator
from ordermesh_platform.paging import Cursor, decode_token, encode_token, page_of, page_size

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_page_token_round_trips() -> None:
    cursor = Cursor(T0, "abc")
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


def _rows(n: int) -> list[tuple[datetime, str]]:
    """Rows as a store returns them, newest first."""
    return [(T0 - timedelta(seconds=i), f"id-{i}") for i in range(n)]


def _cursor(row: tuple[datetime, str]) -> Cursor:
    return Cursor(*row)


def test_a_page_with_more_behind_it_ends_on_a_token_after_its_last_row() -> None:
    page, token = page_of(_rows(3), 2, _cursor)
    assert page == _rows(2)
    assert decode_token(Validator(), token) == Cursor(*_rows(2)[-1])


@pytest.mark.parametrize("found", [0, 1, 2])
def test_the_last_page_has_no_token(found: int) -> None:
    page, token = page_of(_rows(found), 2, _cursor)
    assert page == _rows(found)
    assert token == ""
