"""Bad input against every InventoryService RPC.

Inventory-service runs once for the module, in-process on its own PostgreSQL
database, on a background event loop; the synchronous hypothesis tests call it over
one blocking channel (tests/fuzz/harness.py). Every RPC gets 200 arbitrary messages,
200 near-valid ones, a valid request with each field spoiled in turn, undecodable and
oversized bytes. The answer must always be a documented status, never UNKNOWN or
INTERNAL. At the end the service must still be SERVING and its tables must hold only
valid data (tests/fuzz/rules.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from hypothesis import strategies as st

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2 as pb
from tests.fuzz import rules, suite
from tests.fuzz.harness import Mesh, rpcs_of
from tests.fuzz.strategies import (
    INT32,
    INT64,
    Field,
    amounts,
    currencies,
    identifiers,
    ints,
    lists_of,
    near_valid,
    or_unset,
    quantities,
    skus,
    sub_message,
    texts,
)

pytestmark = pytest.mark.integration

RPCS = rpcs_of("inventory", pb.DESCRIPTOR.services_by_name["InventoryService"])
KNOWN = ("FZ-A", "FZ-B", "FZ-U", "FZ-S")
ORDERS = tuple(f"o-{i}" for i in range(8))  # shared, so calls meet each other's state


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    mesh = Mesh()
    try:
        mesh.start("inventory", relay_enabled=False, sweep_interval_s=0.5)
        rpc = {r.name: r for r in RPCS}
        for sku, price, currency, units in [
            ("FZ-A", 100, "EUR", 10**6),
            ("FZ-B", 0, "EUR", 10**6),
            ("FZ-U", 250, "USD", 10**6),
            ("FZ-S", 1000, "EUR", 3),
            ("FZ-SWEEP", 100, "EUR", 10**6),  # for the sweep only: no strategy names it
        ]:
            product = pb.Product(
                sku=sku, name=sku, unit_price=money_pb2.Money(amount_minor=price, currency=currency)
            )
            mesh.call(rpc["UpsertProduct"], pb.UpsertProductRequest(product=product))
            adjust = pb.AdjustStockRequest(adjustment_id=f"seed-{sku}", sku=sku, delta=units)
            mesh.call(rpc["AdjustStock"], adjust)
        yield mesh
    finally:
        mesh.close()


# -- near-valid requests --------------------------------------------------------------


def _sku_lists(required: bool) -> Field[list[str]]:
    listed = lists_of(skus(KNOWN), max_valid=6)
    return listed if required else Field(st.one_of(st.just([]), listed.valid), listed.hostile)


def _durations() -> Field[duration_pb2.Duration | None]:
    valid = st.builds(
        duration_pb2.Duration,
        seconds=st.one_of(st.sampled_from([0, 1, 86_399, 86_400]), st.integers(0, 86_400)),
        nanos=st.one_of(st.just(0), st.integers(0, 999_999_999)),
    )
    hostile = st.builds(
        duration_pb2.Duration,
        seconds=st.one_of(st.sampled_from([-1, 86_401, 315_576_000_001]), ints(*INT64)),
        nanos=st.one_of(st.sampled_from([-1, 10**9, -(10**9)]), ints(*INT32)),
    )
    return Field(st.one_of(st.none(), valid), hostile)


def _deltas() -> Field[int]:
    valid = st.one_of(
        st.sampled_from([1, -1, 3, -3, 10**9, -(10**9)]),
        st.integers(1, 10**9),
        st.integers(-(10**9), -1),
    )
    hostile = st.one_of(st.sampled_from([0, 10**9 + 1, -(10**9) - 1]), ints(*INT64))
    return Field(valid, hostile)


def _prices() -> Field[int]:
    amount = amounts()
    return Field(st.one_of(st.just(0), amount.valid), amount.hostile)


def _lines() -> Field[list[pb.ReservationLine]]:
    line = sub_message(pb.ReservationLine, sku=skus(KNOWN), quantity=quantities())
    return lists_of(line, many=(50, 51, 1000), unique_by=lambda x: x.sku)


def _reserve_fields() -> dict[str, Field[Any]]:
    return {
        "order_id": identifiers(ORDERS, max_length=64),
        "lines": _lines(),
        "ttl": _durations(),
        "currency": currencies(),
    }


def _order_fields() -> dict[str, Field[Any]]:
    return {"order_id": identifiers(ORDERS, max_length=64)}


NEAR_VALID: dict[str, Callable[[], st.SearchStrategy[Message]]] = {
    "UpsertProduct": lambda: near_valid(
        pb.UpsertProductRequest,
        product=or_unset(
            sub_message(
                pb.Product,
                sku=Field(st.one_of(skus(KNOWN).valid, skus().valid), skus(KNOWN).hostile),
                name=texts(256, min_length=1),
                unit_price=or_unset(
                    sub_message(
                        money_pb2.Money, amount_minor=_prices(), currency=currencies(("EUR", "USD"))
                    )
                ),
            )
        ),
    ),
    "ListProducts": lambda: near_valid(pb.ListProductsRequest, skus=_sku_lists(required=False)),
    "AdjustStock": lambda: near_valid(
        pb.AdjustStockRequest,
        adjustment_id=identifiers(("adj-1", "adj-2", "adj-3")),
        sku=skus(KNOWN),
        delta=_deltas(),
        note=texts(256),
    ),
    "GetStock": lambda: near_valid(pb.GetStockRequest, skus=_sku_lists(required=True)),
    "ReserveStock": lambda: near_valid(pb.ReserveStockRequest, **_reserve_fields()),
    "CommitReservation": lambda: near_valid(pb.CommitReservationRequest, **_order_fields()),
    "ReleaseReservation": lambda: near_valid(pb.ReleaseReservationRequest, **_order_fields()),
    # A batch: near-valid items (each answered on its own), or too few or too many.
    "ReserveStockBatch": lambda: near_valid(
        pb.ReserveStockBatchRequest,
        requests=lists_of(sub_message(pb.ReserveStockRequest, **_reserve_fields()), 8),
    ),
    "CommitReservationBatch": lambda: near_valid(
        pb.CommitReservationBatchRequest,
        requests=lists_of(sub_message(pb.CommitReservationRequest, **_order_fields()), 8),
    ),
    "ReleaseReservationBatch": lambda: near_valid(
        pb.ReleaseReservationBatchRequest,
        requests=lists_of(sub_message(pb.ReleaseReservationRequest, **_order_fields()), 8),
    ),
}


# One valid request per RPC, for the sweep that spoils each of its fields in turn.
VALID: dict[str, tuple[Message, str]] = {  # the request, and its id field kept fresh
    "UpsertProduct": (
        pb.UpsertProductRequest(
            product=pb.Product(
                sku="FZ-N", name="new", unit_price=money_pb2.Money(amount_minor=1, currency="EUR")
            )
        ),
        "",
    ),
    "ListProducts": (pb.ListProductsRequest(skus=["FZ-A", "FZ-B"]), ""),
    "AdjustStock": (
        pb.AdjustStockRequest(adjustment_id="sweep", sku="FZ-SWEEP", delta=1, note="sweep"),
        "adjustment_id",
    ),
    "GetStock": (pb.GetStockRequest(skus=["FZ-A"]), ""),
    "ReserveStock": (
        pb.ReserveStockRequest(
            order_id="sweep",
            lines=[pb.ReservationLine(sku="FZ-SWEEP", quantity=1)],
            ttl=duration_pb2.Duration(seconds=60),
            currency="EUR",
        ),
        "order_id",
    ),
    "CommitReservation": (pb.CommitReservationRequest(order_id="sweep"), ""),
    "ReleaseReservation": (pb.ReleaseReservationRequest(order_id="sweep"), ""),
    "ReserveStockBatch": (
        pb.ReserveStockBatchRequest(
            requests=[
                pb.ReserveStockRequest(
                    order_id="sweep-batch",
                    lines=[pb.ReservationLine(sku="FZ-SWEEP", quantity=1)],
                    currency="EUR",
                )
            ]
        ),
        "",
    ),
    "CommitReservationBatch": (
        pb.CommitReservationBatchRequest(
            requests=[pb.CommitReservationRequest(order_id="sweep-batch")]
        ),
        "",
    ),
    "ReleaseReservationBatch": (
        pb.ReleaseReservationBatchRequest(
            requests=[pb.ReleaseReservationRequest(order_id="sweep-batch")]
        ),
        "",
    ),
}

# -- the tests, in the order they run ----------------------------------------------------


class TestInventoryService(suite.ServiceContract):
    RPCS = RPCS
    NEAR_VALID = NEAR_VALID
    VALID = VALID


def test_the_database_holds_only_valid_data_and_the_service_serves(mesh: Mesh) -> None:
    mesh.assert_serving()
    assert mesh.count("inventory", "products") >= len(KNOWN)
    mesh.assert_no_rows("inventory", rules.INVENTORY)
