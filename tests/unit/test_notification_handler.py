"""Which events the notification handler acts on, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.inbound import InboundEvent, UndecodableEvent
from ordermesh_notification.domain import Money, NoticeKind
from ordermesh_notification.handler import NotificationHandler, to_notice


def _event(payload: Message, event_id: str = "ev-1", event_type: str = "") -> InboundEvent:
    return InboundEvent(
        event_id=event_id,
        event_type=event_type or payload.DESCRIPTOR.full_name,
        source="ordermesh/test",
        time=datetime(2026, 1, 2, tzinfo=UTC),
        key="ord-1",
        topic="ordermesh.orders.v1",
        partition=0,
        offset=7,
        payload=payload,
    )


class UntouchableSession:
    """Any use of the session fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the handler used the session ({name}) for an ignored event")


EUR = money_pb2.Money(amount_minor=1234, currency="EUR")
IGNORED = [
    events_pb2.OrderCreated(order_id="ord-1", customer_id="c1", currency="EUR"),
    events_pb2.PaymentAuthorized(payment_id="p1", order_id="ord-1", customer_id="c1", amount=EUR),
    events_pb2.PaymentCaptured(payment_id="p1", order_id="ord-1", customer_id="c1", amount=EUR),
    events_pb2.PaymentVoided(payment_id="p1", order_id="ord-1", customer_id="c1", amount=EUR),
    events_pb2.PaymentDeclined(payment_id="p1", order_id="ord-1", customer_id="c1"),
    events_pb2.StockReserved(order_id="ord-1"),
    events_pb2.StockReleased(order_id="ord-1", reason="EXPIRED"),
]


@pytest.mark.parametrize("payload", IGNORED, ids=lambda p: p.DESCRIPTOR.name)
async def test_events_that_are_not_customer_facing_are_ignored_without_touching_the_database(
    payload: Message,
) -> None:
    session = cast(AsyncConnection, UntouchableSession())
    await NotificationHandler().handle(session, [_event(payload)])


async def test_a_batch_of_only_ignored_events_does_not_touch_the_database() -> None:
    session = cast(AsyncConnection, UntouchableSession())
    events = [_event(payload, event_id=f"ev-{i}") for i, payload in enumerate(IGNORED)]
    await NotificationHandler().handle(session, events)


async def test_a_malformed_event_fails_its_whole_batch_before_anything_is_written() -> None:
    session = cast(AsyncConnection, UntouchableSession())
    good = _event(events_pb2.OrderConfirmed(order_id="ord-1", customer_id="c1"), event_id="ev-1")
    malformed = _event(events_pb2.OrderConfirmed(order_id="ord-2"), event_id="ev-2")
    # The consumer then handles the batch's events one by one: only this one is refused.
    with pytest.raises(UndecodableEvent):
        await NotificationHandler().handle(session, [good, malformed])


async def test_a_foreign_event_type_is_ignored() -> None:
    session = cast(AsyncConnection, UntouchableSession())
    confirmed = events_pb2.OrderConfirmed(order_id="ord-1", customer_id="c1")
    await NotificationHandler().handle(
        session, [_event(confirmed, event_type="com.example.v1.OrderConfirmed")]
    )


def test_the_four_customer_facing_events_become_notices_with_their_facts() -> None:
    confirmed = to_notice(
        _event(events_pb2.OrderConfirmed(order_id="ord-1", customer_id="c1", total=EUR))
    )
    rejected = to_notice(
        _event(events_pb2.OrderRejected(order_id="ord-1", customer_id="c1", reason="OUT_OF_STOCK"))
    )
    cancelled = to_notice(
        _event(events_pb2.OrderCancelled(order_id="ord-1", customer_id="c1", amount=EUR))
    )
    refunded = to_notice(
        _event(
            events_pb2.PaymentRefunded(
                payment_id="p1", order_id="ord-1", customer_id="c1", amount=EUR
            )
        )
    )
    assert confirmed is not None
    assert confirmed.kind is NoticeKind.ORDER_CONFIRMED
    assert confirmed.amount == Money(1234, "EUR")
    assert rejected is not None
    assert rejected.reason == "OUT_OF_STOCK"
    assert rejected.amount is None
    assert cancelled is not None
    assert cancelled.amount == Money(1234, "EUR")
    assert refunded is not None
    assert refunded.payment_id == "p1"
    assert {n.customer_id for n in (confirmed, rejected, cancelled, refunded)} == {"c1"}


@pytest.mark.parametrize(
    "event",
    [
        _event(events_pb2.OrderConfirmed(order_id="ord-1")),  # no customer
        _event(events_pb2.OrderConfirmed(customer_id="c1")),  # no order
        _event(events_pb2.OrderConfirmed(order_id="o", customer_id="c"), event_id="x" * 65),
        _event(
            events_pb2.OrderRejected(order_id="o", customer_id="c"),
            event_type="ordermesh.events.v1.OrderConfirmed",
        ),
    ],
)
def test_a_malformed_customer_facing_event_is_refused_not_retried(event: InboundEvent) -> None:
    with pytest.raises(UndecodableEvent):
        to_notice(event)


def test_the_handler_consumes_the_order_and_payment_topics() -> None:
    assert set(NotificationHandler.topics) == {"ordermesh.orders.v1", "ordermesh.payments.v1"}


def test_the_consumer_is_told_which_types_to_decode_the_customer_facing_ones_alone() -> None:
    handler = NotificationHandler()
    told = {
        events_pb2.OrderConfirmed.DESCRIPTOR, events_pb2.OrderRejected.DESCRIPTOR,
        events_pb2.OrderCancelled.DESCRIPTOR, events_pb2.PaymentRefunded.DESCRIPTOR,
    }  # fmt: skip
    untold = {
        events_pb2.OrderCreated.DESCRIPTOR, events_pb2.PaymentAuthorized.DESCRIPTOR,
        events_pb2.PaymentDeclined.DESCRIPTOR, events_pb2.PaymentCaptured.DESCRIPTOR,
        events_pb2.PaymentVoided.DESCRIPTOR, events_pb2.PaymentChargedBack.DESCRIPTOR,
    }  # fmt: skip
    for descriptor in told | untold:
        wanted = handler.wants_type("ordermesh.payments.v1", descriptor.full_name)
        assert wanted is (descriptor in told), descriptor.full_name
    # What it would act on, it is told to decode: the two lists are one.
    assert {NoticeKind(d.name) for d in told} == set(NoticeKind)
