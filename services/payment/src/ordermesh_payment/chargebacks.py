"""Payment's consumer of the provider's chargebacks (``ordermesh.psp.chargebacks.v1``).

Inside the consumer's transaction (with its inbox rows): each chargeback becomes the
label of its order (``risk_chargebacks``), and a ``PaymentChargedBack`` event of the
payment goes to the outbox. A chargeback reported twice (a redelivery the inbox did
not catch, a second report) keeps its first label and raises no second event."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import TOPICS, DomainEvent
from ordermesh_messaging.inbound import InboundEvent, under_its_span
from ordermesh_messaging.outbox import Outbox
from ordermesh_payment.risk.events import Chargeback
from ordermesh_payment.risk.labels import ChargebackLabels
from ordermesh_payment.store import PaymentStore, outbox, risk_chargebacks
from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

CHARGEBACK_TOPIC = TOPICS["chargeback"]


def _ms(stamp: Timestamp) -> int:
    return stamp.seconds * 1000 + stamp.nanos // 1_000_000


class ChargebackHandler:
    topics = (CHARGEBACK_TOPIC,)
    event_types = (events_pb2.ChargebackReported.DESCRIPTOR.full_name,)
    idempotent = False  # the inbox keeps a redelivery from reaching the labels at all

    def __init__(self) -> None:
        self._labels = ChargebackLabels(risk_chargebacks)
        self._outbox = Outbox(outbox)

    def wants(self, event: InboundEvent) -> bool:
        return True  # every event of the chargeback topic is a label

    async def handle(self, conn: AsyncConnection, events: Sequence[InboundEvent]) -> None:
        reported = [
            (e, e.payload)
            for e in events
            if isinstance(e.payload, events_pb2.ChargebackReported) and e.payload.order_id
        ]
        if not reported:
            return
        new = await self._labels.add(
            conn,
            [
                (
                    Chargeback(p.order_id, _ms(p.charged_back_at), p.amount.amount_minor),
                    p.amount.currency,
                    p.reason,
                )
                for _, p in reported
            ],
        )
        payments = await PaymentStore(conn).get_many(new)
        raised: list[DomainEvent] = []
        for event, p in reported:
            if p.order_id not in new:
                continue
            new.discard(p.order_id)  # one event, however often it is in this batch
            payment = payments.get(p.order_id)
            if payment is None:  # kept as a label; there is no payment to speak of
                log.warning("chargeback of an unknown payment", order_id=p.order_id)
                continue
            with under_its_span(event):
                raised.append(
                    DomainEvent(
                        "payment",
                        payment.order_id,
                        events_pb2.PaymentChargedBack(
                            payment_id=payment.payment_id,
                            order_id=payment.order_id,
                            customer_id=payment.customer_id,
                            amount=money_pb2.Money(
                                amount_minor=p.amount.amount_minor, currency=p.amount.currency
                            ),
                            reason=p.reason,
                            charged_back_at=p.charged_back_at,
                        ),
                    )
                )
        await self._outbox.add(conn, raised)
