"""The OrderService servicer: protobuf in and out, outcomes to status codes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format

from ordermesh.common.v1 import money_pb2, risk_pb2
from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.order.v1 import order_pb2 as pb
from ordermesh.order.v1 import order_pb2_grpc
from ordermesh_order.domain import Order, OrderState, PlaceOrder, Reason
from ordermesh_order.risk_json import assessment_of
from ordermesh_order.usecases import Orders
from ordermesh_platform.convert import timestamp_ms, to_timestamp
from ordermesh_platform.errors import FailedPrecondition, Unavailable, Validator
from ordermesh_platform.policy import CustomerInRequest, OwnerOfResource, Policy

Context = grpc.aio.ServicerContext[object, object]

STATE_TO_PB = {
    OrderState.PENDING: pb.ORDER_STATE_PENDING,
    OrderState.CONFIRMED: pb.ORDER_STATE_CONFIRMED,
    OrderState.REJECTED: pb.ORDER_STATE_REJECTED,
    OrderState.CANCELLED: pb.ORDER_STATE_CANCELLED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
# Who may call what, while ORDERMESH_AUTH_ENABLED is on (docs/security.md). A customer
# is the token's subject; the order's owner is checked by the use case that loads it.
POLICY = Policy(
    pb.DESCRIPTOR.services_by_name["OrderService"].full_name,
    {
        "PlaceOrder": CustomerInRequest("customer_id"),
        "ListOrders": CustomerInRequest("customer_id"),
        "GetOrder": OwnerOfResource("order"),
        "WatchOrder": OwnerOfResource("order"),
        "CancelOrder": OwnerOfResource("order"),
    },
)
# A rejection the caller waited for is answered as an error: a refusal for good
# (FAILED_PRECONDITION) or a dependency that was down (UNAVAILABLE: retry with a new key).
UNAVAILABLE_REASONS = frozenset({Reason.PAYMENT_UNAVAILABLE, Reason.SAGA_TIMEOUT})


def signals_json(request: pb.PlaceOrderRequest) -> str:
    """The request's risk signals as compact JSON for the order to keep; "" when none."""
    if not request.HasField("risk_signals"):
        return ""
    signals = request.risk_signals
    if signals.HasField("account_created_at") and timestamp_ms(signals.account_created_at) is None:
        # A time protobuf cannot write as JSON is the caller's error, said as such.
        v = Validator()
        v.check(
            False, "risk_signals.account_created_at", "must be a valid timestamp (years 1 to 9999)"
        )
        v.raise_if_invalid()
    return json_format.MessageToJson(request.risk_signals, indent=None)


def reason_to_pb(reason: Reason | None) -> pb.OrderReason.ValueType:
    # An order's reason is named as in ordermesh.common.v1.ErrorReason; OrderReason
    # carries the same names with its enum prefix.
    if reason is None:
        return pb.ORDER_REASON_UNSPECIFIED
    return pb.OrderReason.Value(f"ORDER_REASON_{reason.value}")


def order_to_pb(order: Order) -> pb.Order:
    def money(amount: int | None) -> money_pb2.Money | None:
        return (
            None
            if amount is None
            else money_pb2.Money(amount_minor=amount, currency=order.currency)
        )

    return pb.Order(
        order_id=order.order_id,
        customer_id=order.customer_id,
        idempotency_key=order.idempotency_key,
        state=STATE_TO_PB[order.state],
        lines=[
            pb.OrderLine(
                sku=x.sku,
                quantity=x.quantity,
                unit_price=money(x.unit_price_minor),
                line_total=money(x.total_minor),
            )
            for x in order.lines
        ],
        total=money(order.total_minor),
        reason=reason_to_pb(order.reason),
        reason_detail=order.reason_detail,
        payment_id=order.payment_id,
        create_time=to_timestamp(order.created_at),
        update_time=to_timestamp(order.updated_at),
        currency=order.currency,
        risk_assessment=risk_assessment_of(order),
    )


def risk_assessment_of(order: Order) -> risk_pb2.RiskAssessment | None:
    return assessment_of(order.risk_assessment)


def raise_for_rejection(order: Order) -> None:
    if order.state is not OrderState.REJECTED or order.reason is None:
        return
    metadata = {**order.reason_metadata, "order_id": order.order_id}
    message = f"order {order.order_id} rejected: {order.reason.value}: {order.reason_detail}"
    reason = ErrorReason.Value(order.reason.value)
    if order.reason in UNAVAILABLE_REASONS:
        raise Unavailable(message, reason, metadata)
    # A risk decline carries payment's assessment beside the ErrorInfo, as payment's own does.
    risk = risk_assessment_of(order)
    raise FailedPrecondition(reason, message, metadata, () if risk is None else (risk,))


class OrderApi(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, orders: Orders) -> None:
        self._orders = orders

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: Context
    ) -> pb.PlaceOrderResponse:
        place = PlaceOrder.validated(
            request.customer_id,
            request.idempotency_key,
            [(x.sku, x.quantity) for x in request.items],
            request.currency,
            request.payment.token,
            signals_json(request),
        )
        order, replayed = await self._orders.place(
            place, request.wait_for_outcome, context.time_remaining()
        )
        if request.wait_for_outcome:
            raise_for_rejection(order)
        return pb.PlaceOrderResponse(order=order_to_pb(order), replayed=replayed)

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        return pb.GetOrderResponse(order=order_to_pb(await self._orders.get(request.order_id)))

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Context
    ) -> pb.ListOrdersResponse:
        state = STATE_FROM_PB.get(request.state)
        orders, token = await self._orders.list(
            request.customer_id,
            state,
            request.page_size,
            request.page_token,
            unknown_state=state is None and request.state != pb.ORDER_STATE_UNSPECIFIED,
        )
        return pb.ListOrdersResponse(orders=[order_to_pb(o) for o in orders], next_page_token=token)

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: Context
    ) -> pb.CancelOrderResponse:
        order = await self._orders.cancel(request.order_id, request.note, context.time_remaining())
        return pb.CancelOrderResponse(order=order_to_pb(order))

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: Context
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        async for order in self._orders.watch(request.order_id):
            yield pb.WatchOrderResponse(order=order_to_pb(order))
