"""The saga's participants over gRPC: inventory-service and payment-service.

Maps their answers to what the saga understands: a final refusal (StepFailed), a
transient failure worth retrying (Transient), or success. Every call carries the
timeout the saga gives it, so the caller's deadline reaches every hop."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc
from ordermesh_order.domain import Order, Reason
from ordermesh_order.saga import StepFailed
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
STOCK_REASONS = {"OUT_OF_STOCK": Reason.OUT_OF_STOCK, "CURRENCY_MISMATCH": Reason.CURRENCY_MISMATCH}


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def _transient(error: grpc.aio.AioRpcError) -> Transient:
    return Transient(f"{error.code().name}: {error.details()}")


class GrpcParticipants:
    def __init__(self, inventory: grpc.aio.Channel, payment: grpc.aio.Channel, ttl_s: float):
        self._inventory = inventory_pb2_grpc.InventoryServiceStub(inventory)
        self._payment = payment_pb2_grpc.PaymentServiceStub(payment)
        self._ttl = duration_pb2.Duration()
        self._ttl.FromSeconds(int(ttl_s))

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
            reply = await self._inventory.ReserveStock(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION and info is not None:
                reason = STOCK_REASONS.get(info.reason, Reason.SAGA_TIMEOUT)
                raise StepFailed(
                    reason, error.details() or info.reason, dict(info.metadata)
                ) from error
            raise _transient(error) from error
        return {x.sku: x.unit_price.amount_minor for x in reply.reservation.lines}

    async def release_stock(self, order_id: str, timeout_s: float) -> None:
        await self._call(
            self._inventory.ReleaseReservation(
                inventory_pb2.ReleaseReservationRequest(order_id=order_id), timeout=timeout_s
            )
        )

    async def commit_stock(self, order_id: str, timeout_s: float) -> None:
        await self._call(
            self._inventory.CommitReservation(
                inventory_pb2.CommitReservationRequest(order_id=order_id), timeout=timeout_s
            )
        )

    async def authorize_payment(self, order: Order, amount: int, timeout_s: float) -> str:
        request = payment_pb2.AuthorizePaymentRequest(
            order_id=order.order_id,
            customer_id=order.customer_id,
            amount=money_pb2.Money(amount_minor=amount, currency=order.currency),
            payment_token=order.payment_token,
        )
        try:
            reply = await self._payment.AuthorizePayment(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION and info is not None:
                if info.reason == "PAYMENT_DECLINED":
                    reason = info.metadata.get("decline_reason", "declined")
                    raise StepFailed(
                        Reason.PAYMENT_DECLINED, reason, dict(info.metadata)
                    ) from error
                raise StepFailed(Reason.PAYMENT_UNAVAILABLE, error.details() or "", {}) from error
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise StepFailed(Reason.PAYMENT_DECLINED, error.details() or "", {}) from error
            raise _transient(error) from error
        return reply.payment.payment_id

    async def void_payment(self, order_id: str, timeout_s: float) -> bool:
        """False when the payment was captured already (it needs a refund instead)."""
        try:
            await self._payment.VoidPayment(
                payment_pb2.VoidPaymentRequest(order_id=order_id), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            if info is not None and info.metadata.get("state") in ("CAPTURED", "REFUNDED"):
                return False
            raise _transient(error) from error
        return True

    async def capture_payment(self, order_id: str, timeout_s: float) -> None:
        await self._call(
            self._payment.CapturePayment(
                payment_pb2.CapturePaymentRequest(order_id=order_id), timeout=timeout_s
            )
        )

    async def refund_payment(self, order_id: str, timeout_s: float) -> None:
        await self._call(
            self._payment.RefundPayment(
                payment_pb2.RefundPaymentRequest(order_id=order_id), timeout=timeout_s
            )
        )

    @staticmethod
    async def _call(call: Awaitable[object]) -> None:
        try:
            await call
        except grpc.aio.AioRpcError as error:
            if error.code() in TRANSIENT_CODES:
                raise _transient(error) from error
            # A refusal (the reservation was released, the payment voided by a
            # cancellation...): retrying cannot help; the runner re-reads the order.
            raise StepFailed(Reason.SAGA_TIMEOUT, error.details() or error.code().name) from error
