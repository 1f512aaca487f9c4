"""The CloudEvents Kafka protocol binding, binary content mode: the record value is the
protobuf payload; the event's attributes travel as ``ce_*`` headers."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"

Headers = list[tuple[str, bytes]]

_SPEC_VERSION = ("ce_specversion", SPEC_VERSION.encode())
_CONTENT_TYPE = ("content-type", CONTENT_TYPE.encode())


# The relay builds headers for every event it publishes: the few distinct types, sources
# and commit times of a pass are encoded once, not once per event.
@functools.lru_cache(maxsize=256)
def _encoded(text: str) -> bytes:
    return text.encode()


@functools.lru_cache(maxsize=1024)
def _time_header(time: datetime) -> bytes:
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()


def build_headers(
    event_id: str,
    event_type: str,
    source: str,
    time: datetime,
    traceparent: str = "",
    tracestate: str = "",
) -> Headers:
    headers = [
        _SPEC_VERSION,
        ("ce_id", event_id.encode()),
        ("ce_type", _encoded(event_type)),
        ("ce_source", _encoded(source)),
        ("ce_time", _time_header(time)),
        _CONTENT_TYPE,
    ]
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    if tracestate:
        headers.append(("tracestate", tracestate.encode()))
    return headers


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    return {name: value for name, value in headers or ()}


def parse_time(value: bytes | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.decode().replace("Z", "+00:00"))
    except ValueError:
        return None
