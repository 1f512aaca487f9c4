"""The online features kept fresh by payment's consumer: each payment event that ends
an authorization risk scored (``PaymentAuthorized``, ``PaymentDeclined`` with their
``risk_attempt``) moves the feature states through ``FeatureStore.apply``, in the
consumer's transaction, with its inbox rows.

Idempotent and order-free within the horizon: a redelivered payment is found in its
entities' states, and payments of one customer arriving from several partitions out of
time order leave the states they leave in time order (``FeatureDefinition.apply``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import TOPICS
from ordermesh_messaging.inbound import InboundEvent
from ordermesh_payment.risk.feature_store import FeatureStore
from ordermesh_payment.risk.wire import outcome_of, reports_attempt

PAYMENT_TOPIC = TOPICS["payment"]


class FeatureFeed:
    topics = (PAYMENT_TOPIC,)
    # The events that end an authorization; captures, voids and refunds pass undecoded.
    event_types = (
        events_pb2.PaymentAuthorized.DESCRIPTOR.full_name,
        events_pb2.PaymentDeclined.DESCRIPTOR.full_name,
    )
    # Applying a payment twice changes nothing (``FeatureDefinition.apply``): the
    # states are their own inbox, so the payment events take no inbox row.
    idempotent = True

    def __init__(
        self, store: FeatureStore, freshness: Callable[[float], None] = lambda seconds: None
    ) -> None:
        self._store = store
        # Seconds from an event's time to its attempt being in the features.
        self._freshness = freshness

    def wants(self, event: InboundEvent) -> bool:
        return reports_attempt(event.payload)

    async def handle(self, conn: AsyncConnection, events: Sequence[InboundEvent]) -> None:
        fed = [(e, o) for e in events if (o := outcome_of(e.payload)) is not None]
        if not fed:
            return
        await self._store.apply(conn, [outcome for _, outcome in fed])
        # Measured as the transaction's statements are done; its commit follows.
        applied = time.time()
        for event, outcome in fed:
            at = event.time.timestamp() if event.time is not None else outcome.at_ms / 1000
            self._freshness(max(0.0, applied - at))
