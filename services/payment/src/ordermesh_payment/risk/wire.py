"""The scored attempt on the payment events that end an authorization, and back: what
payment's features consumer applies to the feature states (``FeatureStore.apply``)."""

from __future__ import annotations

from typing import TypeGuard

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ordermesh.common.v1 import money_pb2, risk_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_payment.risk.events import Attempt, Item, PaymentOutcome


def _timestamp(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def attempt_to_pb(attempt: Attempt) -> events_pb2.RiskAttempt:
    return events_pb2.RiskAttempt(
        attempted_at=_timestamp(attempt.at_ms),
        payment_token=attempt.token,
        amount=money_pb2.Money(amount_minor=attempt.amount_minor, currency=attempt.currency),
        items=[
            events_pb2.EventLine(
                sku=i.sku,
                quantity=i.quantity,
                unit_price=money_pb2.Money(
                    amount_minor=i.unit_price_minor, currency=attempt.currency
                ),
            )
            for i in attempt.items
        ],
        signals=risk_pb2.RiskSignals(
            client_ip=attempt.ip,
            device_id=attempt.device_id,
            email_domain=attempt.email_domain,
            billing_country=attempt.billing_country,
            shipping_country=attempt.shipping_country,
            account_created_at=_timestamp(attempt.account_created_ms),
        ),
    )


def reports_attempt(
    event: Message,
) -> TypeGuard[events_pb2.PaymentAuthorized | events_pb2.PaymentDeclined]:
    """Whether the event ends an authorization risk scored (and carries its attempt)."""
    return isinstance(
        event, events_pb2.PaymentAuthorized | events_pb2.PaymentDeclined
    ) and event.HasField("risk_attempt")


def outcome_of(event: Message) -> PaymentOutcome | None:
    """The scored attempt and its outcome an event reports; None for any other event
    (another kind, or one of a payment risk scoring did not see)."""
    if not reports_attempt(event):
        return None
    a = event.risk_attempt
    s = a.signals
    attempt = Attempt(
        order_id=event.order_id,
        at_ms=a.attempted_at.ToMilliseconds(),
        customer_id=event.customer_id,
        token=a.payment_token,
        device_id=s.device_id,
        ip=s.client_ip,
        amount_minor=a.amount.amount_minor,
        currency=a.amount.currency,
        items=tuple(Item(i.sku, i.quantity, i.unit_price.amount_minor) for i in a.items),
        billing_country=s.billing_country,
        shipping_country=s.shipping_country,
        email_domain=s.email_domain,
        account_created_ms=s.account_created_at.ToMilliseconds(),
    )
    return PaymentOutcome(attempt, isinstance(event, events_pb2.PaymentDeclined))
