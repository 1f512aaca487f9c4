from __future__ import annotations

import pytest
from google.protobuf import json_format

from ordermesh.common.v1 import risk_pb2
from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.order.v1 import order_pb2
from ordermesh.payment.v1 import payment_pb2
from ordermesh_order.api import signals_json
from ordermesh_order.domain import Order, OrderLine, OrderState, PlaceOrder, Reason, Work
from ordermesh_platform.errors import Conflict, FailedPrecondition, InvalidArgument


def _request(**change: object) -> PlaceOrder:
    fields: dict[str, object] = {
        "customer_id": "c1",
        "idempotency_key": "k1",
        "items": [("TEA", 2)],
        "currency": "EUR",
        "payment_token": "tok_ok",
    }
    fields.update(change)
    return PlaceOrder.validated(**fields)  # type: ignore[arg-type]


def _event_types(order: Order) -> list[str]:
    return [e.event_type.rsplit(".", 1)[1] for e in order.pull_events()]


def test_a_placed_order_is_pending_and_raises_order_created() -> None:
    order = Order.place("o1", _request())
    assert (order.state, order.work) == (OrderState.PENDING, Work.FORWARD)
    assert _event_types(order) == ["OrderCreated"]


def test_confirm_prices_the_order_and_owes_fulfilment() -> None:
    order = Order.place("o1", _request(items=[("TEA", 2), ("MUG", 1)]))
    order.pull_events()
    order.confirm((OrderLine("TEA", 2, 650), OrderLine("MUG", 1, 1450)), "p1")
    assert (order.state, order.work, order.total_minor) == (OrderState.CONFIRMED, Work.FULFIL, 2750)
    assert _event_types(order) == ["OrderConfirmed"]


def test_only_a_pending_order_can_be_confirmed_or_rejected() -> None:
    order = Order.place("o1", _request())
    order.reject(Reason.OUT_OF_STOCK, "TEA")
    with pytest.raises(FailedPrecondition):
        order.confirm((OrderLine("TEA", 2, 1),), "p1")
    with pytest.raises(FailedPrecondition):
        order.reject(Reason.SAGA_TIMEOUT, "")


def test_only_a_confirmed_order_can_be_cancelled_and_twice_is_a_no_op() -> None:
    order = Order.place("o1", _request())
    with pytest.raises(FailedPrecondition) as raised:
        order.cancel(Reason.CANCELLED_BY_CUSTOMER, "")
    assert raised.value.reason == ErrorReason.ORDER_NOT_CANCELLABLE
    order.confirm((OrderLine("TEA", 2, 100),), "p1")
    assert order.cancel(Reason.CANCELLED_BY_CUSTOMER, "")
    assert (order.state, order.work) == (OrderState.CANCELLED, Work.CANCEL)
    assert not order.cancel(Reason.CANCELLED_BY_CUSTOMER, "")


def test_finishing_other_work_leaves_the_owed_work_alone() -> None:
    order = Order.place("o1", _request())
    order.confirm((OrderLine("TEA", 2, 100),), "p1")
    order.cancel(Reason.CANCELLED_BY_CUSTOMER, "")
    order.work_done(Work.FULFIL)  # a fulfilment that lost the race to a cancellation
    assert order.work is Work.CANCEL


def test_the_same_key_with_another_request_is_a_conflict() -> None:
    order = Order.place("o1", _request())
    order.check_same_request(_request())
    with pytest.raises(Conflict):
        order.check_same_request(_request(items=[("TEA", 3)]))
    with pytest.raises(Conflict):
        order.check_same_request(_request(payment_token="tok_decline"))


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"items": []}, {"items"}),
        ({"items": [("TEA", 0)]}, {"items[0].quantity"}),
        ({"items": [("TEA", 1001)]}, {"items[0].quantity"}),
        ({"items": [("TEA", 1), ("TEA", 2)]}, {"items"}),
        ({"items": [("bad sku", 1)]}, {"items[0].sku"}),
        ({"customer_id": "x" * 129}, {"customer_id"}),
        ({"customer_id": "tab\there"}, {"customer_id"}),
        ({"currency": "XAU"}, {"currency"}),
        ({"payment_token": ""}, {"payment.token"}),
    ],
)
def test_bad_requests_name_their_fields(change: dict[str, object], fields: set[str]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _request(**change)
    assert {v.field for v in raised.value.violations} == fields


def test_risk_signals_are_kept_with_the_order_and_are_not_part_of_its_identity() -> None:
    signals = risk_pb2.RiskSignals(client_ip="192.0.2.7", device_id="d1", billing_country="DE")
    request = order_pb2.PlaceOrderRequest(risk_signals=signals)
    kept = signals_json(request)
    with_signals = PlaceOrder.validated("c1", "k1", [("TEA", 1)], "EUR", "tok_ok", kept)
    without = PlaceOrder.validated("c1", "k1", [("TEA", 1)], "EUR", "tok_ok")
    assert with_signals.fingerprint() == without.fingerprint()
    order = Order.place("o1", with_signals)
    assert order.risk_signals == kept
    forwarded = payment_pb2.AuthorizePaymentRequest()
    json_format.Parse(order.risk_signals, forwarded.risk_signals)
    assert forwarded.risk_signals == signals
    assert signals_json(order_pb2.PlaceOrderRequest()) == ""


def test_oversized_risk_signals_are_an_invalid_argument() -> None:
    huge = json_format.MessageToJson(risk_pb2.RiskSignals(device_id="d" * 2000), indent=None)
    with pytest.raises(InvalidArgument) as raised:
        PlaceOrder.validated("c1", "k1", [("TEA", 1)], "EUR", "tok_ok", huge)
    assert [v.field for v in raised.value.violations] == ["risk_signals"]
