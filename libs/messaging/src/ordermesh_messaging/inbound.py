"""An event as a consumer's handler receives it: decoded, with its CloudEvents attributes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.message import Message
from opentelemetry import context
from opentelemetry.context import Context

from ordermesh.events.v1 import events_pb2
from ordermesh_platform.telemetry import context_from_traceparent


class UndecodableEvent(Exception):
    """The record is not an ordermesh event this consumer can read: never retried."""


def decode_payload(event_type: str, payload: bytes) -> Message:
    """The protobuf message named by the CloudEvents ``type`` (its full proto name)."""
    package, _, name = event_type.rpartition(".")
    if (
        package != events_pb2.DESCRIPTOR.package
        or name not in events_pb2.DESCRIPTOR.message_types_by_name
    ):
        raise UndecodableEvent(f"unknown event type {event_type!r}")
    message_class = getattr(events_pb2, name)
    try:
        message: Message = message_class.FromString(payload)
    except Exception as error:
        raise UndecodableEvent(f"payload of {event_type} does not decode: {error}") from error
    return message


@dataclass(frozen=True)
class InboundEvent:
    event_id: str  # ce_id: the idempotency key of every effect of this event
    event_type: str  # ce_type, e.g. "ordermesh.events.v1.OrderConfirmed"
    source: str  # ce_source, e.g. "ordermesh/order"
    time: datetime | None
    key: str  # the aggregate id (the order id for every event today)
    topic: str
    partition: int
    offset: int
    payload: Message
    headers: dict[str, bytes] = field(default_factory=dict)
    # Its CONSUMER span's context: what a handler does for this event runs under it.
    trace_context: Context | None = field(default=None, compare=False, repr=False)


@contextlib.contextmanager
def under_its_span(event: InboundEvent) -> Iterator[None]:
    """Make the event's CONSUMER span current (its logs, SQL and traceparent belong to
    it), even inside a batch whose shared statements are untraced."""
    trace_context = event.trace_context
    if trace_context is None and "traceparent" in event.headers:
        # No CONSUMER span (no OTLP endpoint): the producer's context stands in.
        trace_context = context_from_traceparent(
            event.headers["traceparent"].decode(errors="replace"),
            event.headers.get("tracestate", b"").decode(errors="replace"),
        )
    if trace_context is None:
        yield
        return
    token = context.attach(trace_context)
    try:
        yield
    finally:
        context.detach(token)
