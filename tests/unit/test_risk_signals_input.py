"""A risk signal's time that no Timestamp can hold is the caller's error (INVALID_ARGUMENT
naming the field), on PlaceOrder and on each item of an authorization batch alike."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from ordermesh.common.v1 import money_pb2, risk_pb2
from ordermesh.order.v1 import order_pb2
from ordermesh.payment.v1 import payment_pb2
from ordermesh_order.api import signals_json
from ordermesh_payment.api import authorization_of
from ordermesh_platform.errors import InvalidArgument

OUT_OF_RANGE = timestamp_pb2.Timestamp(seconds=-(2**63))


def _signals(created: timestamp_pb2.Timestamp) -> risk_pb2.RiskSignals:
    return risk_pb2.RiskSignals(device_id="d1", account_created_at=created)


def test_place_order_refuses_an_account_time_no_timestamp_can_hold() -> None:
    request = order_pb2.PlaceOrderRequest(risk_signals=_signals(OUT_OF_RANGE))
    with pytest.raises(InvalidArgument) as refused:
        signals_json(request)
    assert [v.field for v in refused.value.violations] == ["risk_signals.account_created_at"]


def test_an_authorization_with_such_a_time_is_refused_on_its_own() -> None:
    def request(created: timestamp_pb2.Timestamp) -> payment_pb2.AuthorizePaymentRequest:
        return payment_pb2.AuthorizePaymentRequest(
            order_id="o-1", customer_id="c1", payment_token="tok_ok",
            amount=money_pb2.Money(amount_minor=100, currency="EUR"),
            risk_signals=_signals(created),
        )  # fmt: skip

    bad = authorization_of(request(OUT_OF_RANGE))  # converting never raises: items stay apart
    with pytest.raises(InvalidArgument) as refused:
        bad.validate()
    assert [v.field for v in refused.value.violations] == ["risk_signals.account_created_at"]
    authorization_of(request(timestamp_pb2.Timestamp(seconds=1_700_000_000))).validate()
