"""Bad input against every PaymentService RPC.

Payment-service (with its simulated provider) runs once for the module, in-process
on its own PostgreSQL database, on a background event loop; the synchronous
hypothesis tests call it over one blocking channel (tests/fuzz/harness.py). Every RPC
gets 200 arbitrary messages, 200 near-valid ones, a valid request with each field
spoiled in turn, undecodable and oversized bytes. The answer must always be a
documented status, never UNKNOWN or INTERNAL. At the end the service must still be
SERVING and its tables must hold only valid data (tests/fuzz/rules.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import strategies as st

from ordermesh.common.v1 import money_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from tests.fuzz import rules, suite
from tests.fuzz.harness import Mesh, rpcs_of
from tests.fuzz.strategies import (
    Field,
    amounts,
    currencies,
    identifiers,
    lists_of,
    near_valid,
    or_unset,
    strings,
    sub_message,
    texts,
)

pytestmark = pytest.mark.integration

RPCS = rpcs_of("payment", pb.DESCRIPTOR.services_by_name["PaymentService"])
ORDERS = tuple(f"o-{i}" for i in range(12))  # shared, so calls meet each other's state


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    mesh = Mesh()
    try:
        # A breaker opened by tok_timeout would refuse every later authorization.
        mesh.start(
            "payment",
            relay_enabled=False,
            psp_timeout_s=0.1,
            psp_attempts=2,
            psp_breaker_threshold=10**6,
        )
        yield mesh
    finally:
        mesh.close()


def _tokens() -> Field[str]:
    valid = st.sampled_from(
        ["tok_ok", "tok_ok", "tok_ok", "tok_decline", "tok_insufficient_funds", "tok_flaky"]
    )
    hostile = st.one_of(st.just("tok_timeout"), identifiers(max_length=256).hostile, strings())
    return Field(valid, hostile)


def _authorize_fields() -> dict[str, Field[Any]]:
    return {
        "order_id": identifiers(ORDERS, max_length=64),
        "customer_id": identifiers(("c1", "c2")),
        "amount": or_unset(
            sub_message(money_pb2.Money, amount_minor=amounts(), currency=currencies())
        ),
        "payment_token": _tokens(),
    }


def _order_fields() -> dict[str, Field[Any]]:
    return {"order_id": identifiers(ORDERS, max_length=64)}


NEAR_VALID: dict[str, Callable[[], st.SearchStrategy[Message]]] = {
    "AuthorizePayment": lambda: near_valid(pb.AuthorizePaymentRequest, **_authorize_fields()),
    "CapturePayment": lambda: near_valid(pb.CapturePaymentRequest, **_order_fields()),
    "VoidPayment": lambda: near_valid(pb.VoidPaymentRequest, **_order_fields()),
    # A batch: near-valid items (each answered on its own), or too few or too many.
    "AuthorizePaymentBatch": lambda: near_valid(
        pb.AuthorizePaymentBatchRequest,
        requests=lists_of(sub_message(pb.AuthorizePaymentRequest, **_authorize_fields()), 8),
    ),
    "CapturePaymentBatch": lambda: near_valid(
        pb.CapturePaymentBatchRequest,
        requests=lists_of(sub_message(pb.CapturePaymentRequest, **_order_fields()), 8),
    ),
    "VoidPaymentBatch": lambda: near_valid(
        pb.VoidPaymentBatchRequest,
        requests=lists_of(sub_message(pb.VoidPaymentRequest, **_order_fields()), 8),
    ),
    "RefundPayment": lambda: near_valid(
        pb.RefundPaymentRequest, order_id=identifiers(ORDERS, max_length=64), note=texts(512)
    ),
    "GetPayment": lambda: near_valid(
        pb.GetPaymentRequest, order_id=identifiers(ORDERS, max_length=64)
    ),
}


# One valid request per RPC, for the sweep that spoils each of its fields in turn.
VALID: dict[str, tuple[Message, str]] = {  # the request, and its id field kept fresh
    "AuthorizePayment": (
        pb.AuthorizePaymentRequest(
            order_id="sweep",
            customer_id="c1",
            amount=money_pb2.Money(amount_minor=1250, currency="EUR"),
            payment_token="tok_ok",
        ),
        "order_id",
    ),
    "CapturePayment": (pb.CapturePaymentRequest(order_id="sweep"), ""),
    "RefundPayment": (pb.RefundPaymentRequest(order_id="sweep", note="sweep"), ""),
    "GetPayment": (pb.GetPaymentRequest(order_id="sweep"), ""),
    "VoidPayment": (pb.VoidPaymentRequest(order_id="sweep-void"), ""),
    "AuthorizePaymentBatch": (
        pb.AuthorizePaymentBatchRequest(
            requests=[
                pb.AuthorizePaymentRequest(
                    order_id="sweep-batch",
                    customer_id="c1",
                    amount=money_pb2.Money(amount_minor=1250, currency="EUR"),
                    payment_token="tok_ok",
                )
            ]
        ),
        "",
    ),
    "CapturePaymentBatch": (
        pb.CapturePaymentBatchRequest(requests=[pb.CapturePaymentRequest(order_id="sweep")]),
        "",
    ),
    "VoidPaymentBatch": (
        pb.VoidPaymentBatchRequest(requests=[pb.VoidPaymentRequest(order_id="sweep-void")]),
        "",
    ),
}

# -- the tests, in the order they run ----------------------------------------------------


class TestPaymentService(suite.ServiceContract):
    RPCS = RPCS
    NEAR_VALID = NEAR_VALID
    VALID = VALID


def test_the_database_holds_only_valid_data_and_the_service_serves(mesh: Mesh) -> None:
    mesh.assert_serving()
    assert mesh.count("payment", "payments") > 0
    mesh.assert_no_rows("payment", rules.PAYMENT)
