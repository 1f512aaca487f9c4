"""The saga's participants over gRPC: inventory-service and payment-service.

Every step goes through a live batcher to the participant's batch RPC: the sagas in
flight share one call per hop, and each order still gets its own answer (a batch
answer carries a google.rpc.Status per item). Answers map to what the saga
understands: a final refusal (StepFailed), a transient failure worth retrying
(Transient), or success. A batch call's timeout is the longest its items have left;
each item's caller stops waiting at its own, so the caller's deadline reaches every hop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message
from google.rpc import code_pb2

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc
from ordermesh_client.errors import (
    InvalidRequest,
    OrdermeshError,
    PaymentDeclined,
    RiskDeclined,
    decode,
    from_status,
)
from ordermesh_order.domain import Order, OrderLine, Reason
from ordermesh_order.risk_json import assessment_json
from ordermesh_order.saga import Authorization, StepFailed
from ordermesh_platform.batching import LiveBatcher
from ordermesh_platform.resilience import Transient

# Codes after which the same call may succeed later.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
Req = TypeVar("Req", bound=Message)
Res = TypeVar("Res")
# A batcher over one batch RPC: items are (request, deadline), answers the item's result.
Hop = LiveBatcher[tuple[Req, float], Res]


def order_reason(error: OrdermeshError, otherwise: Reason) -> Reason:
    """The order's reason named like the refusal's (both are ordermesh.common.v1.ErrorReason
    names), or ``otherwise``."""
    return Reason.__members__.get(error.reason_name, otherwise)


def _transient(error: OrdermeshError) -> Transient:
    return Transient(f"{error.code.name}: {error.message}")


def _hop(
    name: str,
    method: Callable[..., Awaitable[Any]],
    batch_request: Callable[..., Message],
    answer: str,
    max_size: int,
    in_flight: int,
    stall_s: float,
    min_interval_s: float = 0.0,
) -> Hop[Req, Res]:
    """A batcher over one batch RPC (``batch_request(requests=...)``, answered with one
    ``results`` entry per item, whose ``answer`` field is the item's result). An item
    whose status is not OK is raised to its own caller as its typed refusal
    (:func:`ordermesh_client.errors.from_status`)."""

    async def run(items: Sequence[tuple[Req, float]]) -> list[Res | BaseException]:
        timeout = max(deadline for _, deadline in items) - time.monotonic()
        reply = await method(
            batch_request(requests=[request for request, _ in items]),
            timeout=max(timeout, 0.001),
        )
        return [
            getattr(result, answer)
            if result.status.code == code_pb2.OK
            else from_status(result.status)
            for result in reply.results
        ]

    return LiveBatcher(name, run, max_size, in_flight, min_interval_s, stall_s)


class GrpcParticipants:
    def __init__(
        self,
        inventory: grpc.aio.Channel,
        payment: grpc.aio.Channel,
        ttl_s: float,
        batch_max_size: int = 256,
        batch_in_flight: int = 1,
        fulfil_interval_s: float = 0.0,
        stall_s: float = math.inf,
    ):
        stock = inventory_pb2_grpc.InventoryServiceStub(inventory)
        self._payment = payment_pb2_grpc.PaymentServiceStub(payment)
        self._ttl = duration_pb2.Duration()
        self._ttl.FromSeconds(int(ttl_s))
        # A batch the peer is slow to answer lets the next one go after stall_s: one stuck
        # call (a lock wait, a slow provider) holds only its own orders.
        n, k, st = batch_max_size, batch_in_flight, stall_s
        # Capture and commit follow the answer: nobody waits for them, so their batches
        # may be spaced out and gather more orders each (ordermesh_platform.batching).
        after = fulfil_interval_s
        inv, pay = inventory_pb2, payment_pb2
        self._reserve: Hop[inv.ReserveStockRequest, inv.Reservation] = _hop(
            "reserve_stock", stock.ReserveStockBatch, inv.ReserveStockBatchRequest,
            "reservation", n, k, st,
        )  # fmt: skip
        self._commit: Hop[inv.CommitReservationRequest, inv.Reservation] = _hop(
            "commit_stock", stock.CommitReservationBatch, inv.CommitReservationBatchRequest,
            "reservation", n, k, st, after,
        )  # fmt: skip
        self._release: Hop[inv.ReleaseReservationRequest, inv.Reservation] = _hop(
            "release_stock", stock.ReleaseReservationBatch, inv.ReleaseReservationBatchRequest,
            "reservation", n, k, st,
        )  # fmt: skip
        self._authorize: Hop[pay.AuthorizePaymentRequest, pay.Payment] = _hop(
            "authorize_payment", self._payment.AuthorizePaymentBatch,
            pay.AuthorizePaymentBatchRequest, "payment", n, k, st,
        )  # fmt: skip
        self._capture: Hop[pay.CapturePaymentRequest, pay.Payment] = _hop(
            "capture_payment", self._payment.CapturePaymentBatch, pay.CapturePaymentBatchRequest,
            "payment", n, k, st, after,
        )  # fmt: skip
        self._void: Hop[pay.VoidPaymentRequest, pay.Payment] = _hop(
            "void_payment", self._payment.VoidPaymentBatch, pay.VoidPaymentBatchRequest,
            "payment", n, k, st,
        )  # fmt: skip

    async def reserve_stock(self, order: Order, timeout_s: float) -> dict[str, int]:
        request = inventory_pb2.ReserveStockRequest(
            order_id=order.order_id,
            lines=[
                inventory_pb2.ReservationLine(sku=x.sku, quantity=x.quantity) for x in order.lines
            ],
            ttl=self._ttl,
            currency=order.currency,
        )
        try:
            reservation = await self._reserve.submit((request, _deadline(timeout_s)))
        except (grpc.aio.AioRpcError, OrdermeshError) as error:
            refused = decode(error)
            if refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason_name:
                raise StepFailed(
                    order_reason(refused, Reason.SAGA_TIMEOUT),
                    refused.message or refused.reason_name,
                    refused.metadata,
                ) from error
            raise _transient(refused) from error
        return {x.sku: x.unit_price.amount_minor for x in reservation.lines}

    async def release_stock(self, order_id: str, timeout_s: float) -> None:
        request = inventory_pb2.ReleaseReservationRequest(order_id=order_id)
        await _settled(self._release.submit((request, _deadline(timeout_s))))

    async def commit_stock(self, order_id: str, timeout_s: float) -> None:
        request = inventory_pb2.CommitReservationRequest(order_id=order_id)
        await _settled(self._commit.submit((request, _deadline(timeout_s))))

    async def authorize_payment(
        self, order: Order, priced: tuple[OrderLine, ...], timeout_s: float
    ) -> Authorization:
        amount = sum(x.total_minor or 0 for x in priced)
        request = payment_pb2.AuthorizePaymentRequest(
            order_id=order.order_id,
            customer_id=order.customer_id,
            amount=money_pb2.Money(amount_minor=amount, currency=order.currency),
            payment_token=order.payment_token,
            # The lines feed risk scoring's order features (item count, SKUs, resale share).
            items=[
                payment_pb2.PaymentItem(
                    sku=x.sku,
                    quantity=x.quantity,
                    unit_price=money_pb2.Money(
                        amount_minor=x.unit_price_minor or 0, currency=order.currency
                    ),
                )
                for x in priced
            ],
        )
        if order.risk_signals:
            json_format.Parse(order.risk_signals, request.risk_signals)
        try:
            payment = await self._authorize.submit((request, _deadline(timeout_s)))
        except (grpc.aio.AioRpcError, OrdermeshError) as error:
            refused = decode(error)
            if isinstance(refused, RiskDeclined):
                raise StepFailed(
                    Reason.RISK_DECLINED,
                    "declined by payment risk scoring",
                    refused.metadata,
                    assessment_json(refused.risk_assessment),
                ) from error
            if isinstance(refused, PaymentDeclined):
                reason = refused.decline_reason or "declined"
                raise StepFailed(Reason.PAYMENT_DECLINED, reason, refused.metadata) from error
            if refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason_name:
                raise StepFailed(Reason.PAYMENT_UNAVAILABLE, refused.message, {}) from error
            # This order's request was refused, not the batch call: it will not pass later.
            if isinstance(error, InvalidRequest):
                raise StepFailed(Reason.PAYMENT_DECLINED, refused.message, {}) from error
            raise _transient(refused) from error
        risk = payment.risk_assessment if payment.HasField("risk_assessment") else None
        return Authorization(str(payment.payment_id), assessment_json(risk))

    async def void_payment(self, order_id: str, timeout_s: float) -> bool:
        """False when the payment was captured already (it needs a refund instead)."""
        request = payment_pb2.VoidPaymentRequest(order_id=order_id)
        try:
            await self._void.submit((request, _deadline(timeout_s)))
        except (grpc.aio.AioRpcError, OrdermeshError) as error:
            refused = decode(error)
            if refused.metadata.get("state") in ("CAPTURED", "REFUNDED"):
                return False
            raise _transient(refused) from error
        return True

    async def capture_payment(self, order_id: str, timeout_s: float) -> None:
        request = payment_pb2.CapturePaymentRequest(order_id=order_id)
        await _settled(self._capture.submit((request, _deadline(timeout_s))))

    async def refund_payment(self, order_id: str, timeout_s: float) -> None:
        # Refunds follow cancellations, one at a time: no batch to share.
        await _settled(
            self._payment.RefundPayment(
                payment_pb2.RefundPaymentRequest(order_id=order_id), timeout=timeout_s
            )
        )


def _deadline(timeout_s: float) -> float:
    return time.monotonic() + timeout_s


async def _settled(call: Awaitable[object]) -> None:
    try:
        await call
    except (grpc.aio.AioRpcError, OrdermeshError) as error:
        refused = decode(error)
        if refused.code in TRANSIENT_CODES:
            raise _transient(refused) from error
        # A refusal (the reservation was released, the payment voided by a
        # cancellation...): retrying cannot help; the runner re-reads the order.
        raise StepFailed(Reason.SAGA_TIMEOUT, refused.message or refused.code.name) from error
