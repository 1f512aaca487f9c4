"""A domain event on its way to Kafka: which aggregate, which topic, which payload."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import Message

from ordermesh_platform.telemetry import traceparent_of_current

# Topic per aggregate type; the record key is the aggregate id, so one aggregate's
# events stay in order on one partition.
TOPICS = {
    "order": "ordermesh.orders.v1",
    "reservation": "ordermesh.reservations.v1",
    "payment": "ordermesh.payments.v1",
    # The payment provider's reports (the simulated provider publishes through payment).
    "chargeback": "ordermesh.psp.chargebacks.v1",
}


@dataclass(frozen=True)
class DomainEvent:
    aggregate_type: str
    aggregate_id: str
    payload: Message
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # (traceparent, tracestate) of the request that raised it: a batch writes the events
    # of many requests in one transaction, and each event goes on in its own trace.
    trace: tuple[str, str] = field(default_factory=traceparent_of_current)

    @property
    def event_type(self) -> str:
        """The CloudEvents ``type``: the payload's full protobuf name."""
        return self.payload.DESCRIPTOR.full_name

    @property
    def topic(self) -> str:
        return TOPICS[self.aggregate_type]
