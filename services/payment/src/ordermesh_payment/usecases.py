"""Payment use cases. The provider is never called inside a database transaction: the
intent is committed first (AUTHORIZING), the provider called, the outcome committed with
its event. The order id is the idempotency key all the way to the provider."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime

from google.protobuf.message import Message

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.outbox import Outbox
from ordermesh_payment.domain import (
    Payment,
    PaymentState,
    validate_authorization,
    validate_order_id_only,
)
from ordermesh_payment.psp import PspDeclined, PspRefused, ResilientProvider
from ordermesh_payment.store import PaymentStore, outbox
from ordermesh_platform.db import Transactions
from ordermesh_platform.errors import FailedPrecondition, NotFound, Unavailable
from ordermesh_platform.resilience import Transient


def _money(p: Payment) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=p.amount_minor, currency=p.currency)


def _event(p: Payment) -> Message | None:
    common = {"payment_id": p.payment_id, "order_id": p.order_id, "customer_id": p.customer_id}
    match p.state:
        case PaymentState.AUTHORIZED:
            return events_pb2.PaymentAuthorized(**common, amount=_money(p))
        case PaymentState.DECLINED:
            return events_pb2.PaymentDeclined(**common, decline_reason=p.decline_reason)
        case PaymentState.CAPTURED:
            return events_pb2.PaymentCaptured(**common, amount=_money(p))
        case PaymentState.VOIDED:
            return events_pb2.PaymentVoided(**common, amount=_money(p))
        case PaymentState.REFUNDED:
            return events_pb2.PaymentRefunded(**common, amount=_money(p))
    return None


def _deadline(budget_s: float | None) -> float | None:
    return None if budget_s is None else time.monotonic() + budget_s


class Payments:
    def __init__(self, sessions: Transactions, provider: ResilientProvider) -> None:
        self._sessions = sessions
        self._provider = provider
        self._outbox = Outbox(outbox)

    async def get(self, order_id: str) -> Payment:
        validate_order_id_only(order_id)
        async with self._sessions() as session:
            found = await PaymentStore(session).get(order_id)
        if found is None:
            raise NotFound("payment", order_id)
        return found

    async def _record(self, before: Payment, after: Payment) -> Payment:
        """Commit a move with its event; if another call moved the payment first,
        return what it is now."""
        async with self._sessions.begin() as session:
            store = PaymentStore(session)
            if not await store.move(before, after):
                current = await store.get(before.order_id)
                assert current is not None
                return current
            event = _event(after)
            if event is not None:
                await self._outbox.add(session, [DomainEvent("payment", after.order_id, event)])
            return after

    async def authorize(
        self,
        order_id: str,
        customer_id: str,
        amount_minor: int,
        currency: str,
        token: str,
        budget_s: float | None = None,
    ) -> Payment:
        validate_authorization(order_id, customer_id, amount_minor, currency, token)
        deadline = _deadline(budget_s)
        now = datetime.now(UTC)
        intent = Payment(
            str(uuid.uuid4()), order_id, customer_id, PaymentState.AUTHORIZING,
            amount_minor, currency, "", "", now, now,
        )  # fmt: skip
        async with self._sessions.begin() as session:
            store = PaymentStore(session)
            if not await store.claim(intent):
                existing = await store.get(order_id)
                assert existing is not None
                existing.refuse_if_finished_without_money()
                existing.check_same_request(amount_minor, currency)
                if existing.state is not PaymentState.AUTHORIZING:
                    return existing  # authorized before: never a second authorization
                intent = existing  # an earlier attempt did not finish: ask again, same key
        try:
            authorization = await self._provider.authorize(
                order_id, amount_minor, currency, token, deadline
            )
        except PspDeclined as decline:
            outcome = await self._record(
                intent, intent.moved_to(PaymentState.DECLINED, decline_reason=decline.reason)
            )
            outcome.refuse_if_finished_without_money()
            return outcome
        except Transient as error:
            raise Unavailable(f"payment provider unavailable: {error}") from error
        outcome = await self._record(
            intent,
            intent.moved_to(PaymentState.AUTHORIZED, psp_reference=authorization.reference),
        )
        if outcome.state is PaymentState.VOIDED:
            # Voided while the provider was answering: release the hold it just made.
            await self._call_provider(
                self._provider.void(order_id, authorization.reference, deadline)
            )
        outcome.refuse_if_finished_without_money()
        return outcome

    async def capture(self, order_id: str, budget_s: float | None = None) -> Payment:
        current = await self.get(order_id)
        target = current.moved_to(PaymentState.CAPTURED)
        if target is current:
            return current
        await self._call_provider(
            self._provider.capture(
                order_id, current.psp_reference, current.amount_minor, _deadline(budget_s)
            )
        )
        return await self._settle(current, target)

    async def void(self, order_id: str, budget_s: float | None = None) -> Payment | None:
        """Release an authorization. Voiding an order without a payment records a
        tombstone, so an authorization still in flight cannot land afterwards."""
        validate_order_id_only(order_id)
        now = datetime.now(UTC)
        tombstone = Payment(
            str(uuid.uuid4()), order_id, "", PaymentState.VOIDED, 0, "XXX", "", "", now, now
        )
        async with self._sessions.begin() as session:
            if await PaymentStore(session).claim(tombstone):
                return None
        current = await self.get(order_id)
        if current.state is PaymentState.DECLINED:
            return current  # nothing is held
        target = current.moved_to(PaymentState.VOIDED)
        if target is current:
            return current
        await self._call_provider(
            self._provider.void(order_id, current.psp_reference, _deadline(budget_s))
        )
        return await self._settle(current, target)

    async def refund(self, order_id: str, budget_s: float | None = None) -> Payment:
        current = await self.get(order_id)
        target = current.moved_to(PaymentState.REFUNDED)
        if target is current:
            return current
        await self._call_provider(
            self._provider.refund(
                order_id, current.psp_reference, current.amount_minor, _deadline(budget_s)
            )
        )
        return await self._settle(current, target)

    async def _settle(self, before: Payment, after: Payment) -> Payment:
        outcome = await self._record(before, after)
        if outcome.state is not after.state:
            # Another call moved the payment between our read and our write: the move
            # we made at the provider is now judged against what it became.
            outcome.moved_to(after.state)
        return outcome

    @staticmethod
    async def _call_provider(call: Awaitable[None]) -> None:
        try:
            await call
        except Transient as error:
            raise Unavailable(f"payment provider unavailable: {error}") from error
        except PspRefused as error:
            raise FailedPrecondition("PSP_REFUSED", str(error)) from error
