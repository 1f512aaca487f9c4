"""Keyset pagination with opaque page tokens, shared by every List RPC."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_

from ordermesh_platform.errors import Validator

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class Cursor:
    """Position after the last item of a page, newest first: (created_at, id) descending."""

    created_at: datetime
    id: str


def page_size(v: Validator, requested: int, field: str = "page_size") -> int:
    v.check(0 <= requested <= MAX_PAGE_SIZE, field, f"must be 0-{MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE


def encode_token(cursor: Cursor) -> str:
    raw = json.dumps({"t": cursor.created_at.isoformat(), "id": cursor.id}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_token(v: Validator, token: str, field: str = "page_token") -> Cursor | None:
    """The cursor in a token; None for the first page, or a violation for garbage."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        cursor = Cursor(datetime.fromisoformat(data["t"]), str(data["id"]))
        # What the database driver does with them: a time at the ends of the calendar
        # overflows in UTC, and PostgreSQL refuses NUL in text (both were INTERNAL, as
        # was JSON nested too deep to parse: RecursionError).
        cursor.created_at.astimezone(UTC)
        if "\x00" in cursor.id:
            raise ValueError("NUL in the cursor id")
        return cursor
    except (
        binascii.Error,
        ValueError,
        KeyError,
        TypeError,
        UnicodeError,
        OverflowError,
        RecursionError,
    ):
        v.check(False, field, "is not a token returned by this service")
        return None


def newest_first(
    query: Select[Any],
    created_at: ColumnElement[Any],
    id_: ColumnElement[Any],
    after: Cursor | None,
) -> Select[Any]:
    """Order a query newest first by (created_at, id) and start it after ``after``."""
    query = query.order_by(created_at.desc(), id_.desc())
    if after is None:
        return query
    return query.where(
        or_(created_at < after.created_at, and_(created_at == after.created_at, id_ < after.id))
    )


def page_of(rows: Sequence[T], size: int, cursor: Callable[[T], Cursor]) -> tuple[list[T], str]:
    """One page of ``rows`` read with a limit of ``size + 1``, and the token of the next
    page: empty when the extra row did not come back, so the last page says so without
    another round trip."""
    if len(rows) <= size:
        return list(rows), ""
    page = list(rows[:size])
    return page, encode_token(cursor(page[-1]))
