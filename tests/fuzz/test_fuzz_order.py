"""Bad input against every OrderService RPC.

Order-service runs once for the module with the inventory and payment services it
calls (all three in-process, each on its own PostgreSQL database, on one background
event loop; short saga and step timeouts so that a valid-looking PlaceOrder finishes
quickly). The synchronous hypothesis tests call order-service over one blocking
channel (tests/fuzz/harness.py). Every RPC gets 200 arbitrary messages, 200
near-valid ones, a valid request with each field spoiled in turn, undecodable and
oversized bytes. The answer must always be a documented status, never UNKNOWN or
INTERNAL. At the end the three services must still be SERVING and their tables must
hold only valid data (tests/fuzz/rules.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.protobuf.message import Message
from hypothesis import strategies as st

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2
from ordermesh.order.v1 import order_pb2 as pb
from tests.fuzz import rules, suite
from tests.fuzz.harness import Mesh, rpcs_of
from tests.fuzz.strategies import (
    Field,
    currencies,
    enums,
    identifiers,
    lists_of,
    near_valid,
    or_unset,
    page_sizes,
    page_tokens,
    quantities,
    skus,
    sub_message,
    texts,
)

pytestmark = pytest.mark.integration

RPCS = rpcs_of("order", pb.DESCRIPTOR.services_by_name["OrderService"])
INVENTORY_RPCS = {
    r.name: r
    for r in rpcs_of("inventory", inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"])
}
KNOWN = ("FZ-A", "FZ-B", "FZ-U", "FZ-S")
CUSTOMERS = ("fz-c1", "fz-c2", "fz-c3")  # names no arbitrary request uses
KEYS = ("k1", "k2", "k3")


@dataclass(frozen=True)
class Seed:
    """Orders placed before the fuzzing, so that near-valid calls find real ones."""

    order_ids: tuple[str, ...]
    confirmed: tuple[str, ...]
    page_tokens: tuple[str, ...]


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    mesh = Mesh()
    try:
        mesh.start("inventory", relay_enabled=False)
        # A breaker opened by tok_timeout would reject every later order.
        mesh.start(
            "payment",
            relay_enabled=False,
            psp_timeout_s=0.1,
            psp_attempts=2,
            psp_breaker_threshold=10**6,
        )
        mesh.start(
            "order",
            relay_enabled=False,
            inventory_addr=mesh.address("inventory"),
            payment_addr=mesh.address("payment"),
            saga_timeout_s=3.0,
            step_timeout_s=1.0,
            compensation_budget_s=3.0,
            lease_s=2.0,
            recovery_interval_s=0.5,
        )
        for sku, price, currency, units in [
            ("FZ-A", 100, "EUR", 10**6),
            ("FZ-B", 0, "EUR", 10**6),
            ("FZ-U", 250, "USD", 10**6),
            ("FZ-S", 1000, "EUR", 3),
        ]:
            product = inventory_pb2.Product(
                sku=sku, name=sku, unit_price=money_pb2.Money(amount_minor=price, currency=currency)
            )
            upsert = inventory_pb2.UpsertProductRequest(product=product)
            assert mesh.call(INVENTORY_RPCS["UpsertProduct"], upsert)[0].name == "OK"
            adjust = inventory_pb2.AdjustStockRequest(
                adjustment_id=f"seed-{sku}", sku=sku, delta=units
            )
            assert mesh.call(INVENTORY_RPCS["AdjustStock"], adjust)[0].name == "OK"
        yield mesh
    finally:
        mesh.close()


@pytest.fixture(scope="module")
def context(mesh: Mesh) -> Seed:
    """A confirmed, a declined and an out-of-stock order per customer, all final."""
    rpc = {r.name: r for r in RPCS}
    for customer in CUSTOMERS:
        for key, token, sku, quantity in [
            ("seed-ok", "tok_ok", "FZ-A", 1),
            ("seed-ok-2", "tok_ok", "FZ-B", 2),
            ("seed-declined", "tok_decline", "FZ-A", 1),
            ("seed-out-of-stock", "tok_ok", "FZ-S", 1000),
        ]:
            request = pb.PlaceOrderRequest(
                customer_id=customer,
                idempotency_key=key,
                items=[pb.OrderItem(sku=sku, quantity=quantity)],
                payment=pb.PaymentMethod(token=token),
                currency="EUR",
                wait_for_outcome=True,
            )
            mesh.call(rpc["PlaceOrder"], request)
    order_ids: list[str] = []
    confirmed: list[str] = []
    tokens: list[str] = []
    for customer in CUSTOMERS:
        code, replies = mesh.call(rpc["ListOrders"], pb.ListOrdersRequest(customer_id=customer))
        assert code.name == "OK"
        listed = replies[0]
        assert isinstance(listed, pb.ListOrdersResponse)
        order_ids += [o.order_id for o in listed.orders]
        confirmed += [o.order_id for o in listed.orders if o.state == pb.ORDER_STATE_CONFIRMED]
        assert {o.state for o in listed.orders} == {
            pb.ORDER_STATE_CONFIRMED,
            pb.ORDER_STATE_REJECTED,
        }
        code, replies = mesh.call(
            rpc["ListOrders"], pb.ListOrdersRequest(customer_id=customer, page_size=1)
        )
        page = replies[0]
        assert isinstance(page, pb.ListOrdersResponse)
        tokens.append(page.next_page_token)
    return Seed(tuple(order_ids), tuple(confirmed), tuple(tokens))


# -- near-valid requests --------------------------------------------------------------


def _items() -> Field[list[pb.OrderItem]]:
    item = sub_message(pb.OrderItem, sku=skus(KNOWN), quantity=quantities())
    return lists_of(item, many=(50, 51, 1000), unique_by=lambda x: x.sku)


def _tokens() -> Field[str]:
    valid = st.sampled_from(
        ["tok_ok", "tok_ok", "tok_ok", "tok_decline", "tok_insufficient_funds", "tok_flaky"]
    )
    return Field(valid, st.one_of(st.just("tok_timeout"), identifiers(max_length=256).hostile))


def near_valid_request(rpc: str, seed: Seed) -> st.SearchStrategy[Message]:
    orders = identifiers(seed.order_ids, max_length=64)
    if rpc == "PlaceOrder":
        return near_valid(
            pb.PlaceOrderRequest,
            customer_id=identifiers(CUSTOMERS),
            idempotency_key=Field(  # mostly new keys: a reused one may be ABORTED
                st.one_of(st.sampled_from(KEYS), *[identifiers().valid] * 3),
                identifiers().hostile,
            ),
            items=_items(),
            payment=or_unset(sub_message(pb.PaymentMethod, token=_tokens())),
            currency=currencies(),
            wait_for_outcome=Field(st.booleans(), st.booleans()),
        )
    if rpc == "GetOrder":
        return near_valid(pb.GetOrderRequest, order_id=orders)
    if rpc == "ListOrders":
        states = [pb.ORDER_STATE_UNSPECIFIED, pb.ORDER_STATE_CONFIRMED, pb.ORDER_STATE_REJECTED]
        return near_valid(
            pb.ListOrdersRequest,
            customer_id=identifiers(CUSTOMERS),
            page_size=page_sizes(),
            page_token=page_tokens(seed.page_tokens),
            state=Field(st.sampled_from(states), enums(pb.OrderState.DESCRIPTOR)),
        )
    if rpc == "CancelOrder":
        return near_valid(pb.CancelOrderRequest, order_id=orders, note=texts(512))
    if rpc == "WatchOrder":
        return near_valid(pb.WatchOrderRequest, order_id=orders)
    raise AssertionError(f"no near-valid strategy for {rpc}")


def valid_request(rpc: str, seed: Seed) -> tuple[Message, str]:
    """One valid request per RPC, for the sweep that spoils each of its fields in turn,
    and its id field kept fresh (the idempotency key)."""
    order_id = seed.confirmed[0]
    return {
        "PlaceOrder": (
            pb.PlaceOrderRequest(
                customer_id=CUSTOMERS[0],
                idempotency_key="sweep",
                items=[pb.OrderItem(sku="FZ-A", quantity=1)],
                payment=pb.PaymentMethod(token="tok_ok"),
                currency="EUR",
                wait_for_outcome=True,
            ),
            "idempotency_key",
        ),
        "GetOrder": (pb.GetOrderRequest(order_id=order_id), ""),
        "ListOrders": (
            pb.ListOrdersRequest(
                customer_id=CUSTOMERS[0], page_size=1, page_token=seed.page_tokens[0]
            ),
            "",
        ),
        "CancelOrder": (pb.CancelOrderRequest(order_id=order_id, note="sweep"), ""),
        "WatchOrder": (pb.WatchOrderRequest(order_id=order_id), ""),
    }[rpc]


# -- the tests, in the order they run ----------------------------------------------------


class TestOrderService(suite.ServiceContract):
    RPCS = RPCS

    def near_valid(self, rpc: str, context: Seed) -> st.SearchStrategy[Message]:
        return near_valid_request(rpc, context)

    def valid(self, rpc: str, context: Seed) -> list[tuple[Message, str]]:
        return [valid_request(rpc, context)]


def test_the_databases_hold_only_valid_data_and_the_services_serve(mesh: Mesh) -> None:
    mesh.assert_serving()
    assert mesh.count("order", "orders") > 0
    mesh.assert_no_rows("order", rules.ORDER)
    mesh.assert_no_rows("inventory", rules.INVENTORY)
    mesh.assert_no_rows("payment", rules.PAYMENT)
