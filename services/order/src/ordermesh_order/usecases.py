"""Order use cases: place, read, list, cancel, watch."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from ordermesh_order.domain import (
    Order,
    OrderState,
    PlaceOrder,
    Reason,
    Work,
    validate_cancel,
)
from ordermesh_order.saga import SagaRunner
from ordermesh_order.store import NewOrder, OrderRepository, StaleOrder
from ordermesh_order.watch import OrderWatch
from ordermesh_platform.auth import require_owner
from ordermesh_platform.db import Transactions
from ordermesh_platform.errors import NotFound, Overloaded, Validator
from ordermesh_platform.paging import Cursor, decode_token, page_of, page_size
from ordermesh_platform.telemetry import traceparent_of_current
from ordermesh_platform.validation import check_customer_id, validate_order_id

WATCH_POLL_S = 0.5
# Kept back from a caller's deadline for the answer's trip home.
TRANSPORT_MARGIN_S = 0.05
BACKGROUND_RETRY_AFTER_S = 0.5


def caller_deadline(budget_s: float | None) -> float | None:
    """When a waiting caller must have its answer (monotonic), from its gRPC deadline."""
    if budget_s is None:
        return None
    return time.monotonic() + max(0.0, budget_s - TRANSPORT_MARGIN_S)


class Orders:
    def __init__(self, sessions: Transactions, runner: SagaRunner, watch: OrderWatch) -> None:
        self._sessions = sessions
        self._runner = runner
        self._watch = watch

    async def place(
        self, request: PlaceOrder, wait_for_outcome: bool, budget_s: float | None
    ) -> tuple[Order, bool]:
        """The order and whether it was placed before (an idempotent replay)."""
        if not wait_for_outcome and self._runner.background_full:
            # Accepting more than the sagas can work through would only queue them
            # here until they time out: push back before anything is written.
            limit = self._runner.settings.max_background
            raise Overloaded(
                f"order-service is driving {limit} orders in the background, its limit; "
                "retry after the advised delay",
                BACKGROUND_RETRY_AFTER_S,
                {"service": "order", "limit": str(limit), "bound": "max_background_sagas"},
            )
        deadline = caller_deadline(budget_s)
        order = Order.place(str(uuid.uuid4()), request)
        lease_until = order.created_at + timedelta(seconds=self._runner.settings.lease_s)
        existing = await self._runner.accept(
            NewOrder(order, self._runner.owner, lease_until, *traceparent_of_current())
        )
        if existing is not None:
            existing.check_same_request(request)
            if wait_for_outcome and not existing.is_final:
                existing = await self._wait_final(existing, deadline)
            return existing, True
        if not wait_for_outcome:
            self._runner.drive_in_background(order.order_id, order)
            return order, False
        driven = await self._runner.drive(order.order_id, deadline, until_decided=True, order=order)
        assert driven is not None
        if driven.work is not Work.NONE:
            # Capture and commit after the answer; and what a deadline cut short.
            self._runner.drive_in_background(order.order_id, driven)
        return driven, False

    async def get(self, order_id: str) -> Order:
        validate_order_id(order_id)
        async with self._sessions() as session:
            order = await OrderRepository(session).get(order_id)
        if order is None:
            raise NotFound("order", order_id)
        # Only its customer (or an administrator) reads, watches or cancels an order.
        require_owner(order.customer_id, f"order/{order_id}")
        return order

    async def list(
        self,
        customer_id: str,
        state: OrderState | None,
        requested_size: int,
        token: str,
        unknown_state: bool = False,
    ) -> tuple[list[Order], str]:
        """``state`` None lists every state; ``unknown_state`` says the caller sent a
        state this version does not know, which is refused rather than read as "all"."""
        v = Validator()
        check_customer_id(v, customer_id)
        v.check(not unknown_state, "state", "must be an OrderState, or UNSPECIFIED for all")
        size = page_size(v, requested_size)
        after = decode_token(v, token)
        v.raise_if_invalid()
        async with self._sessions() as session:
            found = await OrderRepository(session).list_for_customer(
                customer_id, state, after, size + 1
            )
        return page_of(found, size, lambda o: Cursor(o.created_at, o.order_id))

    async def cancel(self, order_id: str, note: str, budget_s: float | None) -> Order:
        validate_cancel(order_id, note)
        for _ in range(5):  # optimistic concurrency: re-read when a runner moved it
            order = await self.get(order_id)
            if not order.cancel(Reason.CANCELLED_BY_CUSTOMER, note):
                return order
            if not await self._runner.save(order):
                continue  # stale: re-read
            driven = await self._runner.drive(order_id, caller_deadline(budget_s))
            assert driven is not None
            if driven.work is not Work.NONE:
                self._runner.drive_in_background(order_id)
            return driven
        raise StaleOrder(order_id)

    async def watch(self, order_id: str) -> AsyncIterator[Order]:
        """The order now, then each new version, until it is final."""
        order = await self.get(order_id)
        yield order
        with self._watch.subscribe(order_id) as changed:
            while not order.is_final:
                # The poll sees what another replica did; the event what we did.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), WATCH_POLL_S)
                changed.clear()
                latest = await self.get(order_id)
                if latest.version != order.version:
                    order = latest
                    yield order

    async def _wait_final(self, order: Order, deadline: float | None) -> Order:
        """The order once final, or as it is when the deadline comes."""
        delay = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(delay):
                async for latest in self.watch(order.order_id):
                    order = latest
        except TimeoutError:
            pass
        return order
