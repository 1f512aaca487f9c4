"""Events from the mesh's outboxes through the real broker to notifications, on
PostgreSQL: nothing lost, nothing twice, and the broker may go away."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime

import grpc
import pytest
from sqlalchemy import text

from ordermesh.events.v1 import events_pb2
from ordermesh.notification.v1 import notification_pb2 as npb
from ordermesh.notification.v1 import notification_pb2_grpc
from ordermesh.order.v1 import order_pb2 as pb
from ordermesh_cli.mesh import scrape_metrics
from ordermesh_messaging.cloudevents import build_headers, header_map
from ordermesh_messaging.producer import new_producer
from ordermesh_notification.handler import NotificationHandler
from ordermesh_platform.db import create_engine
from tests.e2e.conftest import start_mesh
from tests.support.broker import read_topic
from tests.support.mesh_client import MeshClient
from tests.support.postgres import SERVER_URL, drop_databases_like, unique_name
from tests.support.receivers import SECRET, MailBox, webhook_endpoint

pytestmark = pytest.mark.e2e

ORDERS = "ordermesh.orders.v1"
NOTIFICATION_TOPICS = NotificationHandler.topics
SERVICES_WITH_OUTBOX = ("order", "inventory", "payment")


@contextmanager
def smtp() -> Iterator[tuple[MailBox, int]]:
    from aiosmtpd.controller import Controller

    from tests.support.ports import free_port

    box = MailBox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[MailBox, int]]:
    with smtp() as server:
        yield server


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory, mailbox: tuple[MailBox, int]
) -> AsyncIterator[MeshClient]:
    prefix = unique_name("omevents")
    settings = {
        "ORDERMESH_SMTP_PORT": str(mailbox[1]),
        "ORDERMESH_WEBHOOK_SECRET": SECRET,
        "ORDERMESH_DELIVERY_BACKOFF_BASE_S": "0.2",
        "ORDERMESH_DELIVERY_INTERVAL_S": "0.1",
        "ORDERMESH_KAFKA_REQUEST_TIMEOUT_S": "2",
        "ORDERMESH_OUTBOX_POLL_S": "0.1",
    }
    async for client in start_mesh(
        tmp_path_factory.mktemp("mesh"), f"{SERVER_URL}/{prefix}", settings
    ):
        yield client
    await drop_databases_like(prefix)


async def _sql(mesh: MeshClient, service: str, query: str) -> list[tuple]:  # type: ignore[type-arg]
    engine = create_engine(mesh.mesh.config.database_url(service), 1)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(query))).all()]
    finally:
        await engine.dispose()


async def _backlog(mesh: MeshClient) -> int:
    total = 0
    for service in SERVICES_WITH_OUTBOX:
        rows = await _sql(mesh, service, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
        total += int(rows[0][0])
    return total


async def _drained(mesh: MeshClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while await _backlog(mesh):
        assert time.monotonic() < deadline, "the outbox backlog did not drain"
        await asyncio.sleep(0.2)


async def _place_many(mesh: MeshClient, count: int, concurrency: int = 25) -> list[str]:
    sku = await mesh.add_product(100, stock=count)
    gate = asyncio.Semaphore(concurrency)
    rng = random.Random(7)

    async def one(i: int) -> str:
        async with gate:
            token = "tok_decline" if rng.random() < 0.2 else "tok_ok"
            while True:
                try:
                    order = await mesh.place(
                        {sku: 1}, token=token, wait=False, customer=f"c{i % 10}"
                    )
                    return order.order_id
                except grpc.aio.AioRpcError as error:
                    # Shed before any write (the background bound): sent again after a
                    # pause, as a well-behaved caller does.
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    await asyncio.sleep(0.2)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_every_state_change_has_one_event_and_reaches_its_topic(
    mesh: MeshClient,
) -> None:
    """One event (one event id) per state change, on its topic, however often the
    relay sent it (at least once). The relay deletes what it published, so the topic
    is where the events are counted."""
    order_ids = set(await _place_many(mesh, 500))
    await mesh.settle(timeout_s=120)
    await _drained(mesh)
    states = dict(await _sql(mesh, "order", "SELECT order_id, state FROM orders"))
    expected = Counter({"OrderCreated": 500})
    expected.update(
        "OrderConfirmed" if states[o] == "CONFIRMED" else "OrderRejected" for o in order_ids
    )
    records = await read_topic(
        mesh.mesh.config.kafka_bootstrap, ORDERS, expect=sum(expected.values()), timeout_s=60
    )
    ours = {}  # one record per event id: a record sent twice carries the same id
    for record in records:
        headers = header_map(record.headers)
        kind = headers["ce_type"].decode().rsplit(".", 1)[1]
        aggregate = record.key.decode()
        if aggregate in order_ids and kind in expected:
            ours[headers["ce_id"].decode()] = (aggregate, kind, record)
    per_change = Counter((aggregate, kind) for aggregate, kind, _ in ours.values())
    assert set(per_change.values()) == {1}, "a state change has more than one event"
    assert Counter(kind for _, kind in per_change) == expected
    for aggregate, kind, record in ours.values():
        headers = header_map(record.headers)
        assert headers["ce_source"] == b"ordermesh/order"
        assert headers["ce_specversion"] == b"1.0"
        assert headers["traceparent"].startswith(b"00-")
        assert getattr(events_pb2, kind).FromString(record.value).order_id == aggregate


async def test_with_the_broker_stopped_orders_are_still_taken_and_nothing_is_lost(
    mesh: MeshClient,
) -> None:
    broker = mesh.mesh.broker
    assert broker is not None
    sku = await mesh.add_product(100, stock=100)
    before = await _backlog(mesh)
    assert before == 0
    placed: list[pb.Order] = []
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 20
        n = 0
        while time.monotonic() < deadline:
            n += 1
            placed.append(await mesh.place({sku: 1}, wait=n % 2 == 0))
            await asyncio.sleep(0.5)
        backlog_during = await _backlog(mesh)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    assert {o.state for o in placed[1::2]} == {pb.ORDER_STATE_CONFIRMED}  # the waited ones
    assert backlog_during > len(placed), "events waited in the outboxes"
    await mesh.settle()
    await _drained(mesh)
    ids = [r[0] for r in await _sql(mesh, "order", "SELECT event_id FROM outbox")]
    records = await read_topic(
        mesh.mesh.config.kafka_bootstrap, ORDERS, expect=len(ids), timeout_s=60
    )
    assert set(ids) <= {header_map(r.headers)["ce_id"].decode() for r in records}


async def _notifications(mesh: MeshClient, customer: str) -> list[npb.Notification]:
    import grpc

    async with grpc.aio.insecure_channel(mesh.mesh.config.address("notification")) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        reply = await stub.ListNotifications(
            npb.ListNotificationsRequest(customer_id=customer), timeout=5
        )
        return list(reply.notifications)


async def _set_preferences(mesh: MeshClient, prefs: npb.Preferences) -> None:
    import grpc

    async with grpc.aio.insecure_channel(mesh.mesh.config.address("notification")) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        await stub.SetPreferences(npb.SetPreferencesRequest(preferences=prefs), timeout=5)


async def test_a_confirmed_order_is_mailed_and_posted_once_through_a_flaky_webhook(
    mesh: MeshClient, mailbox: tuple[MailBox, int]
) -> None:
    box, _ = mailbox
    endpoint, server = await webhook_endpoint(script=[500, 503], then=200)
    customer = f"notify-{uuid.uuid4().hex[:6]}"
    try:
        await _set_preferences(
            mesh,
            npb.Preferences(
                customer_id=customer,
                channels=[npb.CHANNEL_EMAIL, npb.CHANNEL_WEBHOOK],
                email=f"{customer}@example.com",
                webhook_url=endpoint.url,
            ),
        )
        sku = await mesh.add_product(2500, stock=1)
        order = await mesh.place({sku: 1}, customer=customer)
        deadline = time.monotonic() + 30
        while True:
            sent = [
                n
                for n in await _notifications(mesh, customer)
                if n.state == npb.DELIVERY_STATE_SENT
            ]
            if len(sent) == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        server.close()
    assert {(n.channel, n.attempts) for n in sent} == {
        (npb.CHANNEL_EMAIL, 1),
        (npb.CHANNEL_WEBHOOK, 3),
    }
    mails = [m for m in box.messages if order.order_id in str(m["Subject"])]
    assert len(mails) == 1
    assert len(endpoint.requests) == 3
    assert all(r.signature_is_valid for r in endpoint.requests)
    assert {r.headers["idempotency-key"] for r in endpoint.requests} == {sent[0].event_id}


async def test_replaying_the_topics_from_the_start_notifies_nobody_twice(
    mesh: MeshClient, mailbox: tuple[MailBox, int]
) -> None:
    box, _ = mailbox
    # Orders of its own, so that the topics hold told events whatever ran before.
    await _place_many(mesh, 40)
    await mesh.settle()
    await _drained(mesh)
    await asyncio.sleep(2)  # let the last deliveries go out
    deliveries_before = await _sql(mesh, "notification", "SELECT count(*) FROM deliveries")
    assert deliveries_before[0][0] > 0
    # Only the events it tells take an inbox row: the others (an order's creation, its
    # payment's authorization and capture) are passed over by their type, undecoded.
    untold = "SELECT count(*) FROM inbox WHERE event_id NOT IN (SELECT event_id FROM deliveries)"
    assert await _sql(mesh, "notification", untold) == [(0,)]
    mails_before = len(box.messages)
    bootstrap = mesh.mesh.config.kafka_bootstrap
    # What the replay must come round to: every record of its topics (read, since the
    # local broker's end offsets are not trusted).
    on_topics = 0
    for topic in NOTIFICATION_TOPICS:
        on_topics += len(await read_topic(bootstrap, topic, expect=1))
    # A new consumer group starts at offset 0 of every topic: every event comes again.
    await mesh.restart("notification", ORDERMESH_CONSUMER_GROUP=f"replay-{uuid.uuid4().hex[:6]}")
    port = mesh.mesh.config.metrics_port("notification")
    deadline = time.monotonic() + 60
    results: dict[str, float] = {}
    while time.monotonic() < deadline:
        metrics = scrape_metrics(port)
        results = {
            result: metrics.get(f'ordermesh_consumer_messages_total{{result="{result}"}}', 0)
            for result in ("duplicate", "ignored", "handled", "dead_lettered")
        }
        if sum(results.values()) >= on_topics:
            break
        await asyncio.sleep(0.5)
    assert sum(results.values()) >= on_topics, results
    # Every told event came again and was found in the inbox: none handled anew.
    assert results["duplicate"] > 0
    assert results["handled"] == 0, results
    await asyncio.sleep(2)
    assert await _sql(mesh, "notification", "SELECT count(*) FROM deliveries") == deliveries_before
    assert len(box.messages) == mails_before


async def test_a_poison_message_is_dead_lettered_and_replayed_while_orders_flow_on(
    mesh: MeshClient,
) -> None:
    bootstrap = mesh.mesh.config.kafka_bootstrap
    producer = new_producer(bootstrap)
    await producer.start()
    poison_id = str(uuid.uuid4())
    try:
        headers = build_headers(
            poison_id, "ordermesh.events.v1.OrderConfirmed", "test", datetime.now()
        )
        await producer.send_and_wait(
            ORDERS, value=b"\xff not protobuf", key=b"poison", headers=headers
        )
    finally:
        await producer.stop()
    customer = f"after-poison-{uuid.uuid4().hex[:6]}"
    sku = await mesh.add_product(100, stock=1)
    await mesh.place({sku: 1}, customer=customer)
    deadline = time.monotonic() + 30
    while not [
        n for n in await _notifications(mesh, customer) if n.state == npb.DELIVERY_STATE_SENT
    ]:
        assert time.monotonic() < deadline, "the consumer stopped at the poison message"
        await asyncio.sleep(0.2)
    cli = [sys.executable, "-m", "ordermesh_cli", "dlq"]
    listed = _run([*cli, "list", "--kafka", bootstrap, "--topic", f"{ORDERS}.dlq"])
    assert poison_id in listed
    assert "undecodable" in listed
    replayed = _run([*cli, "replay", "--kafka", bootstrap, "--topic", f"{ORDERS}.dlq"])
    assert poison_id in replayed
    records = await read_topic(bootstrap, ORDERS, expect=1, timeout_s=30)
    copies = [r for r in records if header_map(r.headers).get("ce_id") == poison_id.encode()]
    assert len(copies) == 2  # the original and the replay


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout
