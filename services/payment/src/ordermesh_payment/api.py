"""The PaymentService servicer: protobuf in and out, nothing else."""

from __future__ import annotations

from collections.abc import Sized

import grpc

from ordermesh.common.v1 import money_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from ordermesh.payment.v1 import payment_pb2_grpc
from ordermesh_payment.domain import (
    MAX_BATCH_ITEMS,
    AuthorizationRequest,
    Payment,
    PaymentItem,
    PaymentState,
    RiskSignals,
    risk_assessment_to_pb,
)
from ordermesh_payment.usecases import Payments
from ordermesh_platform.convert import timestamp_ms, to_timestamp
from ordermesh_platform.errors import ServiceError, Validator
from ordermesh_platform.grpc_errors import OK_STATUS, to_status_pb
from ordermesh_platform.policy import Policy, ServiceOrAdmin

Context = grpc.aio.ServicerContext[object, object]

# Who may call what, while ORDERMESH_AUTH_ENABLED is on (docs/security.md). Payments are
# moved by order-service's saga only; an operator (admin scope) may do anything, refunds
# included. order-service refunds by itself when a captured order is cancelled.
ORDER_SERVICE = ServiceOrAdmin(("order",))
POLICY = Policy(
    pb.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    {
        "AuthorizePayment": ORDER_SERVICE,
        "CapturePayment": ORDER_SERVICE,
        "VoidPayment": ORDER_SERVICE,
        "RefundPayment": ORDER_SERVICE,
        "GetPayment": ORDER_SERVICE,
        "AuthorizePaymentBatch": ORDER_SERVICE,
        "CapturePaymentBatch": ORDER_SERVICE,
        "VoidPaymentBatch": ORDER_SERVICE,
    },
)

STATE_TO_PB = {
    PaymentState.AUTHORIZING: pb.PAYMENT_STATE_UNSPECIFIED,
    PaymentState.AUTHORIZED: pb.PAYMENT_STATE_AUTHORIZED,
    PaymentState.CAPTURED: pb.PAYMENT_STATE_CAPTURED,
    PaymentState.VOIDED: pb.PAYMENT_STATE_VOIDED,
    PaymentState.REFUNDED: pb.PAYMENT_STATE_REFUNDED,
    PaymentState.DECLINED: pb.PAYMENT_STATE_DECLINED,
}


def payment_to_pb(p: Payment | None) -> pb.Payment | None:
    if p is None:
        return None
    return pb.Payment(
        payment_id=p.payment_id,
        order_id=p.order_id,
        customer_id=p.customer_id,
        state=STATE_TO_PB[p.state],
        amount=money_pb2.Money(amount_minor=p.amount_minor, currency=p.currency),
        decline_reason=p.decline_reason,
        psp_reference=p.psp_reference,
        create_time=to_timestamp(p.created_at),
        update_time=to_timestamp(p.updated_at),
        risk_assessment=risk_assessment_to_pb(p.risk),
    )


def result_to_pb(answer: Payment | ServiceError | None) -> pb.PaymentResult:
    if isinstance(answer, ServiceError):
        return pb.PaymentResult(status=to_status_pb(answer))
    return pb.PaymentResult(status=OK_STATUS, payment=payment_to_pb(answer))


def signals_of(request: pb.AuthorizePaymentRequest) -> RiskSignals | None:
    if not request.HasField("risk_signals"):
        return None
    s = request.risk_signals
    given = s.HasField("account_created_at")
    created = timestamp_ms(s.account_created_at) if given else None
    return RiskSignals(
        s.client_ip, s.device_id, s.email_domain, s.billing_country, s.shipping_country, created,
        account_created_valid=created is not None or not given,
    )  # fmt: skip


def items_of(request: pb.AuthorizePaymentRequest) -> tuple[PaymentItem, ...]:
    return tuple(
        PaymentItem(i.sku, i.quantity, i.unit_price.amount_minor, i.unit_price.currency)
        for i in request.items
    )


def authorization_of(request: pb.AuthorizePaymentRequest) -> AuthorizationRequest:
    return AuthorizationRequest(
        request.order_id,
        request.customer_id,
        request.amount.amount_minor,
        request.amount.currency,
        request.payment_token,
        signals_of(request),
        items_of(request),
    )


def check_batch_size(requests: Sized) -> None:
    v = Validator()
    v.check(
        0 < len(requests) <= MAX_BATCH_ITEMS, "requests", f"must hold 1-{MAX_BATCH_ITEMS} items"
    )
    v.raise_if_invalid()


class PaymentApi(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, payments: Payments) -> None:
        self._payments = payments

    async def AuthorizePayment(
        self, request: pb.AuthorizePaymentRequest, context: Context
    ) -> pb.AuthorizePaymentResponse:
        [answer] = await self._payments.authorize_many(
            [authorization_of(request)], context.time_remaining()
        )
        if isinstance(answer, ServiceError):
            raise answer
        payment = answer
        return pb.AuthorizePaymentResponse(payment=payment_to_pb(payment))

    async def CapturePayment(
        self, request: pb.CapturePaymentRequest, context: Context
    ) -> pb.CapturePaymentResponse:
        payment = await self._payments.capture(request.order_id, context.time_remaining())
        return pb.CapturePaymentResponse(payment=payment_to_pb(payment))

    async def VoidPayment(
        self, request: pb.VoidPaymentRequest, context: Context
    ) -> pb.VoidPaymentResponse:
        payment = await self._payments.void(request.order_id, context.time_remaining())
        return pb.VoidPaymentResponse(payment=payment_to_pb(payment))

    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: Context
    ) -> pb.RefundPaymentResponse:
        payment = await self._payments.refund(request.order_id, context.time_remaining())
        return pb.RefundPaymentResponse(payment=payment_to_pb(payment))

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: Context
    ) -> pb.GetPaymentResponse:
        payment = await self._payments.get(request.order_id)
        return pb.GetPaymentResponse(payment=payment_to_pb(payment))

    async def AuthorizePaymentBatch(
        self, request: pb.AuthorizePaymentBatchRequest, context: Context
    ) -> pb.AuthorizePaymentBatchResponse:
        check_batch_size(request.requests)
        answers = await self._payments.authorize_many(
            [authorization_of(r) for r in request.requests], context.time_remaining()
        )
        return pb.AuthorizePaymentBatchResponse(results=[result_to_pb(a) for a in answers])

    async def CapturePaymentBatch(
        self, request: pb.CapturePaymentBatchRequest, context: Context
    ) -> pb.CapturePaymentBatchResponse:
        check_batch_size(request.requests)
        answers = await self._payments.capture_many(
            [r.order_id for r in request.requests], context.time_remaining()
        )
        return pb.CapturePaymentBatchResponse(results=[result_to_pb(a) for a in answers])

    async def VoidPaymentBatch(
        self, request: pb.VoidPaymentBatchRequest, context: Context
    ) -> pb.VoidPaymentBatchResponse:
        check_batch_size(request.requests)
        answers = await self._payments.void_many(
            [r.order_id for r in request.requests], context.time_remaining()
        )
        return pb.VoidPaymentBatchResponse(results=[result_to_pb(a) for a in answers])
