"""One encoding of a reason: ordermesh.common.v1.ErrorReason. The order's reasons, the
order API's OrderReason and the notification words are named after it."""

from __future__ import annotations

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.order.v1 import order_pb2
from ordermesh_notification import templates
from ordermesh_order.api import reason_to_pb
from ordermesh_order.domain import Reason


def test_every_order_reason_is_a_contract_reason_and_an_order_reason() -> None:
    for reason in Reason:
        assert ErrorReason.Name(ErrorReason.Value(reason.value)) == reason.value
        assert order_pb2.OrderReason.Name(reason_to_pb(reason)) == f"ORDER_REASON_{reason.value}"
    assert reason_to_pb(None) == order_pb2.ORDER_REASON_UNSPECIFIED


def test_every_order_reason_of_the_api_is_one_the_order_can_have() -> None:
    names = {n.removeprefix("ORDER_REASON_") for n, _ in order_pb2.OrderReason.items()}
    assert names - {"UNSPECIFIED"} == {r.value for r in Reason}


def test_the_notification_words_are_keyed_by_contract_reasons() -> None:
    assert set(templates._REASONS) <= set(ErrorReason.keys())
