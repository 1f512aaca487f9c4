"""OrderClient.place_order tries again on what cannot have placed another order, with
the same idempotency key every time, a bounded number of times; a real in-process
gRPC server answers as the order service does."""

from __future__ import annotations

import random
import subprocess
import sys

import grpc
import pytest

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.order.v1 import order_pb2
from ordermesh_client import (
    OrderClient,
    Overloaded,
    PaymentDeclined,
    Unavailable,
    open_channel,
)
from ordermesh_payment.domain import declined
from ordermesh_platform import errors
from tests.support.scripted_orders import scripted_order_service

PLACED = order_pb2.Order(order_id="o-1", state=order_pb2.ORDER_STATE_CONFIRMED)


def _request(key: str = "key-1") -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(
        customer_id="c-1",
        idempotency_key=key,
        items=[order_pb2.OrderItem(sku="TEA", quantity=1)],
        currency="EUR",
    )


def _client(channel: grpc.aio.Channel, attempts: int = 5) -> OrderClient:
    return OrderClient(channel, attempts=attempts, initial_backoff_s=0.001, rng=random.Random(7))


async def test_shed_and_unreached_calls_are_retried_with_the_same_key() -> None:
    async with (
        scripted_order_service() as (orders, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        orders.script = [
            errors.Overloaded("busy", 0.01, {"service": "order"}),
            errors.Unavailable("database away"),
            PLACED,
        ]
        reply = await _client(channel).place_order(_request("key-1"))
    assert reply.order == PLACED
    assert [r.idempotency_key for r in orders.requests] == ["key-1"] * 3
    assert len({r.SerializeToString() for r in orders.requests}) == 1


async def test_a_request_without_a_key_gets_one_kept_across_attempts() -> None:
    async with (
        scripted_order_service() as (orders, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        orders.script = [errors.Unavailable("away"), errors.Unavailable("away"), PLACED]
        await _client(channel).place_order(_request(key=""))
    keys = {r.idempotency_key for r in orders.requests}
    assert len(orders.requests) == 3
    assert len(keys) == 1
    assert "" not in keys


@pytest.mark.parametrize(
    ("refusal", "kind"),
    [
        (declined("o-1", "card_declined"), PaymentDeclined),
        # The order was rejected (the saga ran out of time): the same key answers the same.
        (
            errors.Unavailable("too slow", ErrorReason.SAGA_TIMEOUT, {"order_id": "o-1"}),
            Unavailable,
        ),
    ],
)
async def test_a_refusal_is_raised_typed_without_a_retry(
    refusal: errors.ServiceError, kind: type[Exception]
) -> None:
    async with (
        scripted_order_service() as (orders, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        orders.script = [refusal, PLACED]
        with pytest.raises(kind):
            await _client(channel).place_order(_request())
    assert len(orders.requests) == 1


async def test_retries_are_bounded() -> None:
    async with (
        scripted_order_service() as (orders, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        orders.script = [*[errors.Overloaded("busy", 0.001, {})] * 4, PLACED]
        with pytest.raises(Overloaded) as raised:
            await _client(channel, attempts=3).place_order(_request())
    assert len(orders.requests) == 3
    assert raised.value.retry_after == 0.001


async def test_on_the_clients_channel_every_attempt_still_has_the_same_key() -> None:
    # The channel's own retry policy retries too (gRPC's pushback decides its pause).
    async with (
        scripted_order_service() as (orders, address),
        open_channel(address) as channel,
    ):
        orders.script = [*[errors.Overloaded("busy", 0.001, {})] * 4, PLACED]
        reply = await _client(channel).place_order(_request("key-9"))
    assert reply.order == PLACED  # the fifth answer: four refusals were retried
    assert [r.idempotency_key for r in orders.requests] == ["key-9"] * 5


def test_the_client_imports_none_of_the_servers_packages() -> None:
    # ordermesh-client stands beside the contracts: the platform (SQLAlchemy, pydantic,
    # OpenTelemetry...) is the server's, and the client must not bring it along.
    code = "import sys, ordermesh_client; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    server_side = ("ordermesh_platform", "sqlalchemy", "pydantic", "opentelemetry", "structlog")
    assert [m for m in loaded if m.startswith(server_side)] == []
