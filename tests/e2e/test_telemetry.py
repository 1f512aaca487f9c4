"""One trace per order across every hop, metrics that move, and logs that name the
trace: the services as processes, exporting OTLP to a receiver inside the test."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from ordermesh_cli.mesh import scrape_metrics
from tests.e2e.conftest import start_mesh
from tests.support.mesh_client import MeshClient
from tests.support.otlp import CollectedSpan, Receiver, start_receiver
from tests.support.postgres import SERVER_URL, drop_databases_like, unique_name

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    collected, server, port = await start_receiver()
    collected.port = port  # type: ignore[attr-defined]
    yield collected
    await server.stop(None)


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> AsyncIterator[MeshClient]:
    prefix = unique_name("omtrace")
    settings = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",  # type: ignore[attr-defined]
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "ORDERMESH_OUTBOX_POLL_S": "0.1",
        "ORDERMESH_DELIVERY_INTERVAL_S": "0.1",
    }
    async for client in start_mesh(
        tmp_path_factory.mktemp("mesh"), f"{SERVER_URL}/{prefix}", settings
    ):
        yield client
    await drop_databases_like(prefix)


def _caller_context() -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """The caller's own span, as a W3C traceparent sent with the call."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, (("traceparent", f"00-{trace_id}-{span_id}-01"),)


async def _place(mesh: MeshClient, token: str) -> tuple[str, str]:
    trace_id, caller, metadata = _caller_context()
    sku = await mesh.add_product(300, stock=5)
    request = mesh.place_request({sku: 1}, token=token)
    try:
        await mesh.orders.PlaceOrder(request, timeout=15, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:  # a decline is expected
            raise
    return trace_id, caller


def _one(spans: list[CollectedSpan], **match: str) -> CollectedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) >= 1, f"no span {match}; have {[(s.service, s.name) for s in spans]}"
    return found[0]


def _descends(spans: list[CollectedSpan], child: CollectedSpan, ancestor: CollectedSpan) -> bool:
    by_id = {s.span_id: s for s in spans}
    node: CollectedSpan | None = child
    while node is not None:
        if node.parent_id == ancestor.span_id:
            return True
        node = by_id.get(node.parent_id)
    return False


async def _wait_for_spans(
    receiver: Receiver, trace_id: str, wanted: set[tuple[str, str]], timeout_s: float = 30
) -> list[CollectedSpan]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = receiver.trace(trace_id)
        have = {(s.service, s.name) for s in spans}
        if wanted <= have or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.2)


async def test_one_placed_order_is_one_trace_across_every_hop(
    mesh: MeshClient, receiver: Receiver
) -> None:
    trace_id, caller = await _place(mesh, "tok_ok")
    spans = await _wait_for_spans(
        receiver,
        trace_id,
        {
            ("notification-service", "deliver log"),
            ("order-service", "publish ordermesh.orders.v1"),
        },
    )
    assert {s.trace_id for s in spans} == {trace_id}
    order = _one(
        spans,
        service="order-service",
        kind="SERVER",
        name="/ordermesh.order.v1.OrderService/PlaceOrder",
    )
    assert order.parent_id == caller  # caller -> order server
    # (service, span name, kind) of every edge, as data: adding a hop is one row.
    edges = [
        (
            order,
            (
                "inventory-service",
                "/ordermesh.inventory.v1.InventoryService/ReserveStockBatch",
                "SERVER",
            ),
        ),
        (
            order,
            (
                "payment-service",
                "/ordermesh.payment.v1.PaymentService/AuthorizePaymentBatch",
                "SERVER",
            ),
        ),
        (order, ("order-service", "publish ordermesh.orders.v1", "PRODUCER")),
    ]
    for ancestor, (service, name, kind) in edges:
        child = _one(spans, service=service, name=name, kind=kind)
        assert _descends(spans, child, ancestor), f"{name} does not descend from {ancestor.name}"
        parent = next(s for s in spans if s.span_id == child.parent_id)
        if kind == "SERVER":
            assert (parent.service, parent.kind) == ("order-service", "CLIENT")
    consumes = [s for s in spans if s.service == "notification-service" and s.kind == "CONSUMER"]
    publishes = {s.span_id: s for s in spans if s.kind == "PRODUCER"}
    assert consumes, "the notification service's consume span is in the trace"
    for consume in consumes:  # relay publish -> notification consume
        assert consume.parent_id in publishes
        assert consume.attributes["messaging.system"] == "kafka"
        assert (
            consume.attributes["messaging.destination.name"]
            == publishes[consume.parent_id].attributes["messaging.destination.name"]
        )
        # The relay names where the broker put the record: the consumer read it there.
        for where in ("messaging.destination.partition.id", "messaging.kafka.offset"):
            assert consume.attributes[where] == publishes[consume.parent_id].attributes[where]
    deliver = _one(spans, service="notification-service", name="deliver log", kind="CLIENT")
    assert deliver.parent_id in {c.span_id for c in consumes}  # consume -> channel delivery
    step = _one(spans, service="order-service", name="saga reserve_stock")
    assert step.attributes["ordermesh.order_id"]
    assert any(
        s.name.startswith("SELECT")
        or s.name.startswith("INSERT")
        or "postgresql" in str(s.attributes.get("db.system", ""))
        for s in spans
    ), "SQL spans"


async def test_a_rejected_order_shows_its_compensations_and_the_error(
    mesh: MeshClient, receiver: Receiver
) -> None:
    trace_id, _ = await _place(mesh, "tok_decline")
    release_call = "/ordermesh.inventory.v1.InventoryService/ReleaseReservationBatch"
    # Each service exports on its own schedule: wait for the inventory side as well.
    wanted = {
        ("order-service", "saga compensate release_stock"),
        ("order-service", "saga compensate void_payment"),
        ("inventory-service", release_call),
    }
    spans = await _wait_for_spans(receiver, trace_id, wanted)
    names = {(s.service, s.name) for s in spans}
    assert wanted <= names
    assert _one(spans, service="order-service", name="saga authorize_payment").error
    assert not _one(spans, service="order-service", name="saga compensate release_stock").error
    release = _one(spans, service="inventory-service", name=release_call)
    assert release.kind == "SERVER"


async def test_log_lines_of_a_handled_request_carry_its_trace_id(
    mesh: MeshClient, receiver: Receiver
) -> None:
    trace_id, _ = await _place(mesh, "tok_decline")
    deadline = time.monotonic() + 15
    while True:
        lines = [
            json.loads(line)
            for name in ("order", "notification")
            for line in mesh.mesh.child(name).log_path.read_text().splitlines()
            if trace_id in line
        ]
        services = {line["service"] for line in lines}
        if services == {"order", "notification"} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert services == {"order", "notification"}
    rejecting = next(line for line in lines if line["event"] == "rejecting order")
    assert rejecting["trace_id"] == trace_id
    assert rejecting["span_id"]
    assert rejecting["order_id"]


async def test_every_service_exposes_metrics_that_move(mesh: MeshClient) -> None:
    def scrape() -> dict[str, dict[str, float]]:
        return {
            name: scrape_metrics(mesh.mesh.config.metrics_port(name))
            for name in ("order", "inventory", "payment", "notification")
        }

    before = scrape()
    for token in ("tok_ok", "tok_ok", "tok_decline"):
        await _place(mesh, token)
    await mesh.settle()
    await asyncio.sleep(2)  # the relays and the consumer catch up
    after = scrape()
    moved = [
        ("order", "ordermesh_rpc_requests_total"),
        ("order", "ordermesh_rpc_duration_seconds_count"),
        ("order", "ordermesh_saga_outcomes_total"),
        ("order", "ordermesh_outbox_published_total"),
        ("inventory", "ordermesh_rpc_requests_total"),
        ("inventory", "ordermesh_outbox_published_total"),
        ("payment", "ordermesh_psp_call_duration_seconds_count"),
        ("payment", "ordermesh_outbox_published_total"),
        ("notification", 'ordermesh_consumer_messages_total{result="handled"}'),
        ("notification", 'ordermesh_notifications_total{result="sent"}'),
    ]
    for service, series in moved:
        assert after[service].get(series, 0) > before[service].get(series, 0), (service, series)
    present = [
        ("order", "ordermesh_outbox_backlog"),
        ("order", "ordermesh_outbox_oldest_age_seconds"),
        ("notification", "ordermesh_consumer_lag"),
        ("payment", "ordermesh_psp_circuit_open"),
        ("notification", "ordermesh_notifications_due"),
        ("order", "ordermesh_rpc_in_flight"),
    ]
    for service, series in present:
        assert series in after[service], (service, series)
    # A metric of one service only is not shown, at 0, by the others.
    for service in ("order", "inventory", "notification"):
        assert "ordermesh_psp_circuit_open" not in after[service], service
    for service in ("order", "inventory", "payment"):
        assert "ordermesh_notifications_due" not in after[service], service


async def test_an_order_recovered_after_a_crash_ends_in_the_trace_it_began_in(
    mesh: MeshClient, receiver: Receiver
) -> None:
    sku = await mesh.add_product(300, stock=5)
    await mesh.restart("order", ORDERMESH_FAULT_POINT="after_reserve_stock")
    trace_id, _, metadata = _caller_context()
    request = mesh.place_request({sku: 1}, key="trace-crash")
    with pytest.raises(grpc.aio.AioRpcError):  # the process dies mid-call
        await mesh.orders.PlaceOrder(request, timeout=10, metadata=metadata)
    assert mesh.mesh.child("order").proc.wait(timeout=10) == -9
    await mesh.restart("order")
    spans = await _wait_for_spans(
        receiver, trace_id, {("order-service", "saga recover"), ("order-service", "saga confirm")}
    )
    assert {s.trace_id for s in spans} == {trace_id}
    recover = _one(spans, service="order-service", name="saga recover")
    confirm = _one(spans, service="order-service", name="saga confirm")
    assert _descends(spans, confirm, recover)
    authorize = _one(spans, service="order-service", name="saga authorize_payment")
    assert _descends(spans, authorize, recover)
