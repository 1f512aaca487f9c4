"""The features consumer's half in payment: the events that end an authorization carry
the attempt risk scored, and the feed applies exactly that attempt with its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.inbound import InboundEvent
from ordermesh_payment.domain import Payment, PaymentState, events_of
from ordermesh_payment.risk.events import Attempt, Item, PaymentOutcome
from ordermesh_payment.risk.feature_feed import PAYMENT_TOPIC, FeatureFeed


def _attempt(order_id: str) -> Attempt:
    return Attempt(
        order_id, 1_767_225_600_123, "c1", "tok-1", "dev-1", "192.0.2.7", 4200, "EUR",
        (Item("PHONE", 1, 4000), Item("TEA", 2, 100)), "DE", "FR", "mail.example",
        1_700_000_000_456,
    )  # fmt: skip


def _payment(order_id: str, state: PaymentState) -> Payment:
    now = datetime.now(UTC)
    return Payment("p-" + order_id, order_id, "c1", state, 4200, "EUR", "", "", now, now)


class Store:
    def __init__(self) -> None:
        self.applied: list[PaymentOutcome] = []

    async def apply(self, conn: object, outcomes: Sequence[PaymentOutcome]) -> None:
        self.applied += outcomes


def _inbound(event: DomainEvent, at: datetime, offset: int) -> InboundEvent:
    return InboundEvent(
        event.event_id, event.event_type, "ordermesh/payment", at,
        event.aggregate_id, PAYMENT_TOPIC, 0, offset, event.payload,
    )  # fmt: skip


async def test_the_feed_applies_the_scored_attempts_of_ended_authorizations_only() -> None:
    authorized, declined = _attempt("o1"), replace(_attempt("o2"), items=())
    moved = [
        _payment("o1", PaymentState.AUTHORIZED),
        _payment("o2", PaymentState.DECLINED),
        _payment("o3", PaymentState.AUTHORIZED),  # risk scoring off: no attempt
        _payment("o4", PaymentState.CAPTURED),  # ends no authorization
    ]
    scored = {"o1": authorized, "o2": declined, "o4": _attempt("o4")}
    two_seconds_ago = datetime.now(UTC) - timedelta(seconds=2)
    events = [_inbound(e, two_seconds_ago, i) for i, e in enumerate(events_of(moved, scored))]
    store, lags = Store(), list[float]()
    await FeatureFeed(store, lags.append).handle(None, events)  # type: ignore[arg-type]
    assert store.applied == [PaymentOutcome(authorized, False), PaymentOutcome(declined, True)]
    assert len(lags) == 2
    assert all(2.0 <= lag < 10.0 for lag in lags)
