"""Turns consumed events into delivery records, inside the consumer's transaction.

The consumer records the event ids in its inbox and calls :meth:`NotificationHandler.handle`
with the new ones in the same transaction, so an event is handled once however often it is
delivered. The handler only writes rows (one PENDING delivery per channel), a constant
number of statements for a whole batch; sending happens later, outside any transaction, in
:class:`ordermesh_notification.delivery.DeliveryWorker`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.inbound import InboundEvent, UndecodableEvent, under_its_span
from ordermesh_notification.domain import (
    Channel,
    DeliveryState,
    Money,
    Notice,
    NoticeKind,
    NoticeLine,
    Preferences,
)
from ordermesh_notification.store import NotificationStore
from ordermesh_notification.templates import render
from ordermesh_platform.logs import get_logger
from ordermesh_platform.telemetry import traceparent_of_current

log = get_logger(__name__)

_PACKAGE = events_pb2.DESCRIPTOR.package
# Column widths of the deliveries table: an id longer than these is not one of ours.
_MAX_EVENT_ID, _MAX_ORDER_ID, _MAX_CUSTOMER_ID = 64, 64, 128


def _money(message: Message, field: str) -> Money | None:
    if not message.HasField(field):
        return None
    value: money_pb2.Money = getattr(message, field)
    return Money(value.amount_minor, value.currency)


# The events told to the customer, by their full CloudEvents type: what ``to_notice``
# reads and what the consumer decodes (``NotificationHandler.event_types``).
_KINDS = {f"{_PACKAGE}.{kind.value}": kind for kind in NoticeKind}


def to_notice(event: InboundEvent) -> Notice | None:
    """The customer-facing fact an event carries, or None for every other event type."""
    kind = _KINDS.get(event.event_type)
    if kind is None:
        return None
    p = event.payload
    if p.DESCRIPTOR.full_name != event.event_type:
        raise UndecodableEvent(f"{event.event_type} carries a {p.DESCRIPTOR.full_name} payload")
    notice = Notice(
        kind,
        event.event_id,
        event.event_type,
        order_id=getattr(p, "order_id", ""),
        customer_id=getattr(p, "customer_id", ""),
        occurred_at=event.time,
    )
    match p:
        case events_pb2.OrderConfirmed():
            notice = replace(
                notice,
                amount=_money(p, "total"),
                payment_id=p.payment_id,
                lines=tuple(
                    NoticeLine(line.sku, line.quantity, _money(line, "unit_price"))
                    for line in p.lines
                ),
            )
        case events_pb2.OrderRejected():
            notice = replace(notice, reason=p.reason, reason_detail=p.reason_detail)
        case events_pb2.OrderCancelled():
            notice = replace(notice, reason=p.reason, amount=_money(p, "amount"))
        case events_pb2.PaymentRefunded():
            notice = replace(notice, amount=_money(p, "amount"), payment_id=p.payment_id)
    _check_ids(notice)
    return notice


def _check_ids(notice: Notice) -> None:
    # Redelivering a malformed event cannot fix it: refuse it (the consumer dead-letters it).
    if not 0 < len(notice.event_id) <= _MAX_EVENT_ID:
        raise UndecodableEvent(f"{notice.event_type}: event id must be 1-{_MAX_EVENT_ID} chars")
    if not 0 < len(notice.order_id) <= _MAX_ORDER_ID:
        raise UndecodableEvent(f"{notice.event_type}: order id must be 1-{_MAX_ORDER_ID} chars")
    if not 0 < len(notice.customer_id) <= _MAX_CUSTOMER_ID:
        raise UndecodableEvent(
            f"{notice.event_type}: customer id must be 1-{_MAX_CUSTOMER_ID} chars"
        )


def _recipient(prefs: Preferences, channel: Channel) -> str:
    match channel:
        case Channel.EMAIL:
            return prefs.email
        case Channel.WEBHOOK:
            return prefs.webhook_url
        case Channel.LOG:
            return ""


class NotificationHandler:
    """Records one PENDING delivery per (event, channel) for each customer-facing event
    (OrderConfirmed, OrderRejected, OrderCancelled, PaymentRefunded); ignores the rest.

    ``handle`` runs inside the caller's transaction and only writes through its session:
    no network, no commit. A batch costs two statements however many events it holds."""

    topics: tuple[str, ...] = ("ordermesh.orders.v1", "ordermesh.payments.v1")
    # The CloudEvents types it tells (full protobuf names). The consumer passes every
    # other type over by its header, undecoded, with no inbox row: three of an order's
    # four events on these topics, the authorization among them, which carries the
    # risk attempt when payment scores.
    event_types: frozenset[str] = frozenset(_KINDS)

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock

    def wants_type(self, topic: str, event_type: str) -> bool:
        return event_type in self.event_types

    async def handle(self, session: AsyncConnection, events: Sequence[InboundEvent]) -> None:
        told = [(event, notice) for event in events if (notice := to_notice(event)) is not None]
        if not told:
            return
        store = NotificationStore(session)
        saved = await store.preferences_of({notice.customer_id for _, notice in told})
        now = self._clock()
        rows: list[dict[str, object]] = []
        for event, notice in told:
            with under_its_span(event):  # each delivery continues its own event's trace
                rows += _delivery_rows(notice, _preferences(saved, notice), now)
        added = await store.add_pending(rows)
        for event, notice in told:
            with under_its_span(event):
                log.info(
                    "notification recorded",
                    event_id=notice.event_id,
                    event_type=notice.event_type,
                    order=notice.order_id,
                    channels=[c.value for c in _preferences(saved, notice).channels],
                    new=added[notice.event_id],
                )


def _preferences(saved: Mapping[str, Preferences], notice: Notice) -> Preferences:
    return saved.get(notice.customer_id) or Preferences.default_for(notice.customer_id)


def _delivery_rows(notice: Notice, prefs: Preferences, now: datetime) -> list[dict[str, object]]:
    """One PENDING delivery per chosen channel, carrying the current span's traceparent."""
    rendered = render(notice)
    traceparent, _ = traceparent_of_current()
    return [
        {
            "notification_id": str(uuid.uuid4()),
            "event_id": notice.event_id,
            "event_type": notice.event_type,
            "customer_id": notice.customer_id,
            "order_id": notice.order_id,
            "channel": channel.value,
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "subject": rendered.subject,
            "body": rendered.body,
            "last_error": "",
            "recipient": _recipient(prefs, channel),
            "occurred_at": notice.occurred_at,
            "amount_minor": notice.amount.amount_minor if notice.amount else None,
            "currency": notice.amount.currency if notice.amount else "",
            "created_at": now,
            "next_attempt_at": now,
            "claimed_by": "",
            "claimed_until": None,
            "traceparent": traceparent,
        }
        for channel in prefs.channels
    ]
