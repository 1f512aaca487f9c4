"""The CloudEvents Kafka protocol binding, binary content mode: the record value is the
protobuf payload; the event's attributes travel as ``ce_*`` headers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"

Headers = list[tuple[str, bytes]]


def build_headers(
    event_id: str,
    event_type: str,
    source: str,
    time: datetime,
    traceparent: str = "",
    tracestate: str = "",
) -> Headers:
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", event_id.encode()),
        ("ce_type", event_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", time.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()),
        ("content-type", CONTENT_TYPE.encode()),
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
