"""The order flow through the real services as processes, on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.order.v1 import order_pb2 as pb
from ordermesh.payment.v1 import payment_pb2
from ordermesh_bench.costs import snapshot
from ordermesh_cli.health_client import check_health
from tests.support.mesh_client import MeshClient
from tests.support.rich_status import detail

pytestmark = pytest.mark.e2e


@pytest.fixture
async def mesh(pg_mesh: MeshClient) -> AsyncIterator[MeshClient]:
    """The shared mesh; after every test it settles and the invariants must hold."""
    yield pg_mesh
    await pg_mesh.settle()
    report = await pg_mesh.invariants()
    assert report.violations == []


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def test_happy_path_confirms_at_catalogue_prices_and_commits_stock(mesh: MeshClient) -> None:
    tea = await mesh.add_product(650, stock=10)
    mug = await mesh.add_product(1450, stock=5)
    order = await mesh.place({tea: 3, mug: 2})
    assert order.state == pb.ORDER_STATE_CONFIRMED
    assert order.total.amount_minor == 3 * 650 + 2 * 1450
    assert [(x.sku, x.line_total.amount_minor) for x in order.lines] == [
        (tea, 1950),
        (mug, 2900),
    ]
    await mesh.settle()
    assert await mesh.stock(tea) == (7, 0, 3)
    assert await mesh.stock(mug) == (3, 0, 2)
    payment = await mesh.payment(order.order_id)
    assert payment.state == payment_pb2.PAYMENT_STATE_CAPTURED
    assert payment.amount.amount_minor == order.total.amount_minor


async def test_a_free_order_is_confirmed_without_a_payment(mesh: MeshClient) -> None:
    sample = await mesh.add_product(0, stock=2)
    order = await mesh.place({sample: 2})
    assert order.state == pb.ORDER_STATE_CONFIRMED
    assert (order.total.amount_minor, order.payment_id) == (0, "")
    await mesh.settle()
    assert await mesh.stock(sample) == (0, 0, 2)
    missing = await _error(mesh.payment(order.order_id))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("token", "decline_reason"),
    [("tok_decline", "card_declined"), ("tok_insufficient_funds", "insufficient_funds")],
)
async def test_a_declined_payment_rejects_and_gives_the_stock_back(
    mesh: MeshClient, token: str, decline_reason: str
) -> None:
    sku = await mesh.add_product(500, stock=4)
    error = await _error(mesh.place({sku: 2}, token=token))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info.reason == "PAYMENT_DECLINED"
    assert info.metadata["decline_reason"] == decline_reason
    order = await mesh.get(info.metadata["order_id"])
    assert order.state == pb.ORDER_STATE_REJECTED
    assert order.reason == pb.ORDER_REASON_PAYMENT_DECLINED
    await mesh.settle()
    assert await mesh.stock(sku) == (4, 0, 0)


async def test_a_flaky_provider_is_retried_and_the_order_confirms(mesh: MeshClient) -> None:
    sku = await mesh.add_product(500, stock=1)
    order = await mesh.place({sku: 1}, token="tok_flaky")
    assert order.state == pb.ORDER_STATE_CONFIRMED


async def test_a_provider_that_never_answers_rejects_within_the_deadline(mesh: MeshClient) -> None:
    sku = await mesh.add_product(500, stock=1)
    started = time.monotonic()
    error = await _error(mesh.place({sku: 1}, token="tok_timeout", deadline_s=4))
    assert time.monotonic() - started < 4.5
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info.reason == "PAYMENT_UNAVAILABLE"
    await mesh.settle()
    assert (await mesh.get(info.metadata["order_id"])).state == pb.ORDER_STATE_REJECTED
    assert await mesh.stock(sku) == (1, 0, 0)


async def test_a_card_the_provider_never_answers_holds_up_no_other_order(
    mesh: MeshClient,
) -> None:
    sku = await mesh.add_product(500, stock=2)
    silent = asyncio.create_task(mesh.place({sku: 1}, token="tok_timeout", deadline_s=6))
    await asyncio.sleep(0.5)  # its authorization is out at the provider
    # Behind a batch that waited for the silent card (two 2 s attempts), this order's
    # 3 s would run out; payment answers a batch once its calls have had 1 s.
    order = await mesh.place({sku: 1}, deadline_s=3)
    still_waiting = not silent.done()
    error = await _error(silent)

    assert order.state == pb.ORDER_STATE_CONFIRMED
    assert still_waiting
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_stock_row_locked_elsewhere_holds_up_only_its_own_orders(
    mesh: MeshClient,
) -> None:
    """An operator's transaction holding one SKU's stock row stalls the reservation of
    the batch that needs it; the orders queued behind that batch go in the next one
    once it has run ``ORDERMESH_BATCH_STALL_S`` (1.5 s), not when it ends."""
    locked = await mesh.add_product(500, stock=2)
    free = await mesh.add_product(500, stock=2)
    operator = await asyncpg.connect(mesh.mesh.config.database_url("inventory"))
    try:
        async with operator.transaction():
            await operator.execute("SELECT 1 FROM stock WHERE sku = $1 FOR UPDATE", locked)
            held = asyncio.create_task(mesh.place({locked: 1}, deadline_s=10))
            await asyncio.sleep(0.3)  # its reservation waits for the row
            # Behind the stalled batch until it ended, this order's 3 s ran out.
            order = await mesh.place({free: 1}, deadline_s=3)
            still_waiting = not held.done()
    finally:
        await operator.close()

    assert order.state == pb.ORDER_STATE_CONFIRMED
    assert still_waiting
    assert (await held).state == pb.ORDER_STATE_CONFIRMED  # the row free, it goes on


@pytest.mark.parametrize("case", ["unknown", "insufficient"])
async def test_out_of_stock_names_the_sku_and_holds_nothing(mesh: MeshClient, case: str) -> None:
    plenty = await mesh.add_product(100, stock=10)
    short = await mesh.add_product(100, stock=1) if case == "insufficient" else "NO-SUCH-SKU"
    error = await _error(mesh.place({plenty: 2, short: 2}))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info.reason == "OUT_OF_STOCK"
    assert info.metadata["sku"] == short
    await mesh.settle()
    assert await mesh.stock(plenty) == (10, 0, 0)


async def test_two_hundred_buyers_for_fifty_units_confirm_exactly_fifty(mesh: MeshClient) -> None:
    sku = await mesh.add_product(999, stock=50)

    async def buy(i: int) -> str:
        try:
            await mesh.place({sku: 1}, customer=f"buyer-{i}", deadline_s=60)
            return "CONFIRMED"
        except grpc.aio.AioRpcError as error:
            return str(detail(error, error_details_pb2.ErrorInfo).reason)

    before = snapshot(mesh.mesh).batches["order/reserve_stock"]
    outcomes = Counter(await asyncio.gather(*(buy(i) for i in range(200))))
    assert outcomes == {"CONFIRMED": 50, "OUT_OF_STOCK": 150}
    items, batches = snapshot(mesh.mesh).batches["order/reserve_stock"]
    # The buyers met inside batches as well as across them.
    assert items - before[0] >= 200 > batches - before[1]
    await mesh.settle()
    available, reserved, committed = await mesh.stock(sku)
    assert available == 0
    assert reserved + committed == 50


async def test_concurrent_retries_of_one_order_make_one_order(mesh: MeshClient) -> None:
    sku = await mesh.add_product(300, stock=100)
    request = mesh.place_request({sku: 2}, key="same-key", customer="carol")
    replies = await asyncio.gather(
        *(mesh.orders.PlaceOrder(request, timeout=30) for _ in range(20))
    )
    assert len({r.order.order_id for r in replies}) == 1
    assert {r.order.state for r in replies} == {pb.ORDER_STATE_CONFIRMED}
    assert sum(not r.replayed for r in replies) == 1
    other = mesh.place_request({sku: 3}, key="same-key", customer="carol")
    error = await _error(mesh.orders.PlaceOrder(other, timeout=10))
    assert error.code() == grpc.StatusCode.ABORTED
    assert detail(error, error_details_pb2.ErrorInfo).reason == "IDEMPOTENCY_KEY_REUSED"
    await mesh.settle()
    assert await mesh.stock(sku) == (98, 0, 2)


async def test_a_crash_between_reserve_and_authorize_is_recovered(mesh: MeshClient) -> None:
    sku = await mesh.add_product(700, stock=3)
    await mesh.restart("order", ORDERMESH_FAULT_POINT="after_reserve_stock")
    request = mesh.place_request({sku: 2}, key="crash-1")
    placed_at = time.monotonic()
    error = await _error(mesh.orders.PlaceOrder(request, timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # the process died mid-call
    assert mesh.mesh.child("order").proc.wait(timeout=10) == -9
    assert await mesh.stock(sku) == (1, 2, 0)  # reserved, never authorized
    await mesh.restart("order")
    # The same request again finds the order; the recovery worker finishes it.
    reply = await mesh.orders.PlaceOrder(request, timeout=mesh.saga_timeout_s)
    assert reply.replayed
    assert reply.order.state == pb.ORDER_STATE_CONFIRMED
    assert time.monotonic() - placed_at < mesh.saga_timeout_s
    await mesh.settle()
    assert await mesh.stock(sku) == (1, 0, 2)
    payment = await mesh.payment(reply.order.order_id)
    assert payment.state == payment_pb2.PAYMENT_STATE_CAPTURED


async def _placed_all(mesh: MeshClient, requests: list[pb.PlaceOrderRequest]) -> list[pb.Order]:
    """Every request sent again (same key) until it is answered: one order each."""
    orders = []
    for request in requests:
        reply = await mesh.orders.PlaceOrder(request, timeout=mesh.saga_timeout_s + 10)
        orders.append(reply.order)
    return orders


async def test_order_service_killed_after_a_batch_insert_finishes_every_order_of_it(
    mesh: MeshClient,
) -> None:
    sku = await mesh.add_product(500, stock=100)
    await mesh.restart("order", ORDERMESH_FAULT_POINT="after_insert")
    requests = [
        mesh.place_request({sku: 1}, key=f"kill-insert-{i}", customer=f"k{i}") for i in range(12)
    ]
    answers = await asyncio.gather(
        *(mesh.orders.PlaceOrder(r, timeout=10) for r in requests), return_exceptions=True
    )
    # Every caller of the batch in flight lost its answer with the process.
    assert all(isinstance(a, grpc.aio.AioRpcError) for a in answers)
    assert mesh.mesh.child("order").proc.wait(timeout=10) == -9
    await mesh.restart("order")
    orders = await _placed_all(mesh, requests)
    assert len({o.order_id for o in orders}) == 12
    assert {o.state for o in orders} == {pb.ORDER_STATE_CONFIRMED}
    await mesh.settle()
    assert await mesh.stock(sku) == (88, 0, 12)


async def test_inventory_killed_after_committing_a_batch_answers_it_on_the_retry(
    mesh: MeshClient,
) -> None:
    sku = await mesh.add_product(500, stock=100)
    await mesh.restart("inventory", ORDERMESH_FAULT_POINT="after_reserve_commit")
    requests = [
        mesh.place_request({sku: 2}, key=f"kill-reserve-{i}", customer=f"r{i}") for i in range(12)
    ]

    async def place(request: pb.PlaceOrderRequest) -> pb.PlaceOrderResponse:
        return await mesh.orders.PlaceOrder(request, timeout=mesh.saga_timeout_s)

    placing = [asyncio.create_task(place(r)) for r in requests]
    assert await asyncio.to_thread(mesh.mesh.child("inventory").proc.wait, 20) == -9
    await mesh.restart("inventory")
    # The sagas retried the reservation; inventory answered from what it had committed.
    replies = await asyncio.gather(*placing)
    assert {r.order.state for r in replies} == {pb.ORDER_STATE_CONFIRMED}
    await mesh.settle()
    assert await mesh.stock(sku) == (76, 0, 24)
    report = await mesh.invariants()
    assert report.ok, report.violations


async def test_with_payment_down_waiting_callers_get_unavailable_and_others_wait(
    mesh: MeshClient,
) -> None:
    sku = await mesh.add_product(400, stock=5)
    mesh.mesh.stop_service("payment")
    try:
        started = time.monotonic()
        error = await _error(mesh.place({sku: 1}, deadline_s=3))
        assert time.monotonic() - started < 3.5
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert detail(error, error_details_pb2.ErrorInfo).reason == "PAYMENT_UNAVAILABLE"
        assert await mesh.stock(sku) == (5, 0, 0)  # no stock stays held

        pending = await mesh.place({sku: 1}, wait=False, deadline_s=3)
        assert pending.state == pb.ORDER_STATE_PENDING
        stream = mesh.orders.WatchOrder(pb.WatchOrderRequest(order_id=pending.order_id), timeout=30)
        first = await stream.read()
        assert isinstance(first, pb.WatchOrderResponse)
        seen = [first.order.state]
    finally:
        mesh.mesh.start_service("payment")
    while isinstance(message := await stream.read(), pb.WatchOrderResponse):
        seen.append(message.order.state)
    assert seen[0] == pb.ORDER_STATE_PENDING
    assert seen[-1] == pb.ORDER_STATE_CONFIRMED
    await mesh.wait_serving("payment")


async def test_cancelling_a_confirmed_order_returns_stock_and_money(mesh: MeshClient) -> None:
    sku = await mesh.add_product(1200, stock=2)
    order = await mesh.place({sku: 2})
    await mesh.settle()  # captured and committed
    reply = await mesh.orders.CancelOrder(
        pb.CancelOrderRequest(order_id=order.order_id, note="changed my mind"), timeout=10
    )
    assert reply.order.state == pb.ORDER_STATE_CANCELLED
    again = await mesh.orders.CancelOrder(
        pb.CancelOrderRequest(order_id=order.order_id), timeout=10
    )
    assert again.order.state == pb.ORDER_STATE_CANCELLED
    await mesh.settle()
    assert await mesh.stock(sku) == (2, 0, 0)
    assert (await mesh.payment(order.order_id)).state == payment_pb2.PAYMENT_STATE_REFUNDED


async def test_cancelling_before_capture_voids_the_payment(mesh: MeshClient) -> None:
    sku = await mesh.add_product(100, stock=1)
    pending = await mesh.place({sku: 1}, wait=False)
    order = await mesh.wait_for(pending.order_id, pb.ORDER_STATE_CONFIRMED, 10)
    await mesh.orders.CancelOrder(pb.CancelOrderRequest(order_id=order.order_id), timeout=10)
    await mesh.settle()
    assert await mesh.stock(sku) == (1, 0, 0)
    assert (await mesh.payment(order.order_id)).state in (
        payment_pb2.PAYMENT_STATE_VOIDED,
        payment_pb2.PAYMENT_STATE_REFUNDED,
    )


BAD_REQUESTS = [
    ({"items": []}, {"items"}),
    ({"quantity": 0}, {"items[0].quantity"}),
    ({"quantity": -3}, {"items[0].quantity"}),
    ({"lines": 51}, {"items"}),
    ({"customer_id": ""}, {"customer_id"}),
    ({"idempotency_key": ""}, {"idempotency_key"}),
    ({"currency": "EURO"}, {"currency"}),
    ({"token": ""}, {"payment.token"}),
    ({"sku": "no spaces allowed"}, {"items[0].sku"}),
]


@pytest.mark.parametrize(("change", "fields"), BAD_REQUESTS)
async def test_a_bad_request_gets_its_field_violations(
    mesh: MeshClient, change: dict[str, object], fields: set[str]
) -> None:
    request = mesh.place_request({"TEA": 1})
    if "items" in change:
        del request.items[:]
    if "quantity" in change:
        request.items[0].quantity = change["quantity"]  # type: ignore[assignment]
    if "lines" in change:
        del request.items[:]
        request.items.extend(pb.OrderItem(sku=f"S{i}", quantity=1) for i in range(51))
    if "sku" in change:
        request.items[0].sku = change["sku"]  # type: ignore[assignment]
    if "token" in change:
        request.payment.token = ""
    for name in ("customer_id", "idempotency_key", "currency"):
        if name in change:
            setattr(request, name, change[name])
    error = await _error(mesh.orders.PlaceOrder(request, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = detail(error, error_details_pb2.BadRequest).field_violations
    assert {v.field for v in violations} == fields
    assert await check_health(mesh.mesh.config.address("order")) == "SERVING"


async def test_unknown_orders_are_not_found(mesh: MeshClient) -> None:
    for call in (
        mesh.orders.GetOrder(pb.GetOrderRequest(order_id="nope"), timeout=5),
        mesh.orders.CancelOrder(pb.CancelOrderRequest(order_id="nope"), timeout=5),
    ):
        assert (await _error(call)).code() == grpc.StatusCode.NOT_FOUND


async def test_list_orders_pages_newest_first_and_filters_by_state(mesh: MeshClient) -> None:
    sku = await mesh.add_product(100, stock=3)
    placed = [await mesh.place({sku: 1}, customer="dave") for _ in range(3)]
    await _error(mesh.place({sku: 1}, customer="dave", token="tok_decline"))
    first = await mesh.orders.ListOrders(
        pb.ListOrdersRequest(customer_id="dave", page_size=2), timeout=5
    )
    second = await mesh.orders.ListOrders(
        pb.ListOrdersRequest(customer_id="dave", page_size=2, page_token=first.next_page_token),
        timeout=5,
    )
    assert len(first.orders) == 2
    assert len(second.orders) == 2
    assert second.next_page_token == ""
    listed = [o.order_id for o in [*first.orders, *second.orders]]
    assert listed[1:] == [o.order_id for o in reversed(placed)]
    confirmed = await mesh.orders.ListOrders(
        pb.ListOrdersRequest(customer_id="dave", state=pb.ORDER_STATE_CONFIRMED), timeout=5
    )
    assert {o.order_id for o in confirmed.orders} == {o.order_id for o in placed}
    unknown = await _error(
        mesh.orders.ListOrders(
            pb.ListOrdersRequest(customer_id="dave", state=pb.OrderState.ValueType(99)), timeout=5
        )
    )
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = detail(unknown, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["state"]
