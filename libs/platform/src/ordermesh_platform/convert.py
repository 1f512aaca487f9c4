"""Conversions between protobuf well-known types and Python values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def timestamp_ms(value: timestamp_pb2.Timestamp) -> int | None:
    """Milliseconds since the epoch of a caller's timestamp; None for one outside what a
    Timestamp may hold (years 1 to 9999, nanos below a second): the caller's error, for
    the validation to name, not a ValueError from protobuf."""
    try:
        return int(value.ToMilliseconds())
    except ValueError:
        return None
