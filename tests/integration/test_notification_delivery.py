"""Notifications end to end on PostgreSQL and SQLite: handled events become delivery
records once per (event, channel); the worker sends them to a real SMTP server and a
real HTTP endpoint, retries failures, and ListNotifications shows the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import func, select
from sqlalchemy.engine import Row

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh.notification.v1 import notification_pb2 as pb
from ordermesh.notification.v1 import notification_pb2_grpc
from ordermesh_cli.registry import load_service
from ordermesh_messaging.inbound import InboundEvent
from ordermesh_notification.app import build_senders, retry_policy
from ordermesh_notification.channels import DeliveryFailed
from ordermesh_notification.config import NotificationSettings
from ordermesh_notification.delivery import DeliveryWorker
from ordermesh_notification.domain import Channel, DeliveryState, Outgoing, Preferences, Sent
from ordermesh_notification.handler import NotificationHandler
from ordermesh_notification.store import NotificationStore, deliveries
from ordermesh_notification.usecases import Notifications
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.migrations import upgrade_to_head
from ordermesh_platform.workers import run_periodically
from tests.support.receivers import SECRET, MailBox, webhook_endpoint
from tests.support.services import running_service
from tests.support.statements import statements

pytestmark = pytest.mark.integration

Sessions = Transactions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def sessions(any_database: str) -> AsyncIterator[Sessions]:
    spec = load_service("notification")
    await upgrade_to_head(spec.migrations, any_database, spec.name)
    engine = create_engine(any_database)
    try:
        yield Transactions(engine)
    finally:
        await engine.dispose()


# --- helpers -------------------------------------------------------------------------


def _event(payload: Message, event_id: str) -> InboundEvent:
    return InboundEvent(
        event_id=event_id,
        event_type=payload.DESCRIPTOR.full_name,
        source="ordermesh/order",
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        key="ord-1",
        topic="ordermesh.orders.v1",
        partition=0,
        offset=1,
        payload=payload,
    )


def _confirmed(order_id: str, customer_id: str = "c1", amount: int = 1234) -> Message:
    return events_pb2.OrderConfirmed(
        order_id=order_id,
        customer_id=customer_id,
        total=money_pb2.Money(amount_minor=amount, currency="EUR"),
        payment_id="pay-1",
    )


async def _handle(sessions: Sessions, *events: InboundEvent) -> None:
    """As the consumer does: one transaction around the handler, for a batch of events."""
    async with sessions.begin() as session:
        await NotificationHandler().handle(session, events)


async def _statements_to_handle(sessions: Sessions, events: list[InboundEvent]) -> int:
    async with sessions.begin() as session:
        with statements(sessions.engine) as sent:
            await NotificationHandler().handle(session, events)
    return len(sent)


async def _prefer(sessions: Sessions, prefs: Preferences) -> None:
    await Notifications(sessions).set_preferences(prefs, len(prefs.channels), False)


async def _rows(sessions: Sessions) -> list[Row[Any]]:
    async with sessions() as session:
        return list((await session.execute(select(deliveries))).all())


async def _pending(sessions: Sessions) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(deliveries)
            .where(deliveries.c.state == DeliveryState.PENDING.value)
        )
        return int(count or 0)


def _settings(**overrides: object) -> NotificationSettings:
    values: dict[str, object] = {
        "webhook_secret": SECRET,
        "delivery_max_attempts": 8,
        "delivery_backoff_base_s": 0.001,
        "delivery_backoff_max_s": 0.01,
        **overrides,
    }
    return NotificationSettings.model_validate(values)


async def _deliver_all(worker: DeliveryWorker, sessions: Sessions, passes: int = 500) -> None:
    """Run the worker until nothing is PENDING (bounded)."""
    for _ in range(passes):
        await worker.run_once()
        if await _pending(sessions) == 0:
            return
        await asyncio.sleep(0.005)  # let tiny backoffs pass
    raise AssertionError("deliveries still PENDING after the worker's passes")


async def _list(database_url: str, customer_id: str) -> list[pb.Notification]:
    async with (
        running_service(load_service("notification"), database_url) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        reply = await stub.ListNotifications(pb.ListNotificationsRequest(customer_id=customer_id))
        return list(reply.notifications)


# --- the tests -----------------------------------------------------------------------


async def test_an_order_confirmed_handled_twice_sends_one_email(
    sessions: Sessions, smtp_server: tuple[MailBox, int], any_database: str
) -> None:
    inbox, port = smtp_server
    await _prefer(sessions, Preferences("c1", (Channel.EMAIL,), email="c1@example.com"))
    event = _event(_confirmed("ord-1"), "5b0e6a59-8f0e-4a43-9a53-7c1d6f1e0001")
    await _handle(sessions, event)
    await _handle(sessions, event)  # redelivered: changes nothing

    settings = _settings(smtp_port=port, smtp_from="shop@example.com")
    async with httpx.AsyncClient() as http:
        worker = DeliveryWorker(sessions, build_senders(settings, http), retry_policy(settings))
        await _deliver_all(worker, sessions)
        await _handle(sessions, event)  # even after it was sent
        assert await worker.run_once() == 0

    (mail,) = inbox.messages
    assert inbox.recipients == [["c1@example.com"]]
    assert mail["From"] == "shop@example.com"
    assert mail["Subject"] == "Order ord-1 confirmed"
    assert mail["Message-ID"] == "<5b0e6a59-8f0e-4a43-9a53-7c1d6f1e0001.email@example.com>"
    text = mail.get_content()
    assert "ord-1" in text
    assert "Total: 12.34 EUR" in text

    (listed,) = await _list(any_database, "c1")
    assert (listed.channel, listed.state, listed.attempts) == (
        pb.CHANNEL_EMAIL,
        pb.DELIVERY_STATE_SENT,
        1,
    )
    assert listed.event_id == event.event_id
    assert listed.order_id == "ord-1"
    assert listed.subject == "Order ord-1 confirmed"
    assert listed.HasField("deliver_time")


async def test_a_webhook_failing_twice_then_answering_200_is_one_record_sent_after_3_attempts(
    sessions: Sessions, any_database: str
) -> None:
    endpoint, server = await webhook_endpoint([500, 500], then=200)
    async with server:
        await _prefer(sessions, Preferences("c1", (Channel.WEBHOOK,), webhook_url=endpoint.url))
        event = _event(_confirmed("ord-7", amount=990), "ev-webhook-1")
        await _handle(sessions, event)
        await _handle(sessions, event)
        settings = _settings()
        async with httpx.AsyncClient() as http:
            worker = DeliveryWorker(sessions, build_senders(settings, http), retry_policy(settings))
            await _deliver_all(worker, sessions)

    assert len(endpoint.requests) == 3
    assert all(r.signature_is_valid for r in endpoint.requests)
    assert {r.headers["idempotency-key"] for r in endpoint.requests} == {"ev-webhook-1"}
    assert {r.headers["x-ordermesh-event-type"] for r in endpoint.requests} == {
        "ordermesh.events.v1.OrderConfirmed"
    }
    assert {r.headers["content-type"] for r in endpoint.requests} == {"application/json"}
    assert len({r.body for r in endpoint.requests}) == 1  # every retry sends the same bytes

    (row,) = await _rows(sessions)
    assert (row.state, row.attempts) == (DeliveryState.SENT.value, 3)
    assert row.last_error == "webhook answered HTTP 500"
    assert row.delivered_at is not None

    (listed,) = await _list(any_database, "c1")
    assert (listed.channel, listed.state, listed.attempts) == (
        pb.CHANNEL_WEBHOOK,
        pb.DELIVERY_STATE_SENT,
        3,
    )
    assert listed.notification_id == row.notification_id


async def test_a_webhook_that_always_fails_ends_failed_after_the_last_attempt(
    sessions: Sessions, any_database: str
) -> None:
    endpoint, server = await webhook_endpoint([], then=503)
    async with server:
        await _prefer(sessions, Preferences("c1", (Channel.WEBHOOK,), webhook_url=endpoint.url))
        await _handle(sessions, _event(_confirmed("ord-9"), "ev-webhook-2"))
        settings = _settings(delivery_max_attempts=3)
        async with httpx.AsyncClient() as http:
            worker = DeliveryWorker(sessions, build_senders(settings, http), retry_policy(settings))
            await _deliver_all(worker, sessions)
            assert await worker.run_once() == 0  # given up: never tried again

    assert len(endpoint.requests) == 3
    (row,) = await _rows(sessions)
    assert (row.state, row.attempts) == (DeliveryState.FAILED.value, 3)
    assert row.last_error == "webhook answered HTTP 503"
    assert row.delivered_at is None
    (listed,) = await _list(any_database, "c1")
    assert (listed.state, listed.attempts) == (pb.DELIVERY_STATE_FAILED, 3)
    assert listed.last_error == "webhook answered HTTP 503"


async def test_an_unreachable_webhook_is_retried_and_its_error_kept(sessions: Sessions) -> None:
    closed = f"http://127.0.0.1:{_free_port()}/hooks/orders"
    await _prefer(sessions, Preferences("c1", (Channel.WEBHOOK,), webhook_url=closed))
    await _handle(sessions, _event(_confirmed("ord-3"), "ev-webhook-3"))
    settings = _settings(delivery_max_attempts=2)
    async with httpx.AsyncClient() as http:
        worker = DeliveryWorker(sessions, build_senders(settings, http), retry_policy(settings))
        await _deliver_all(worker, sessions)
    (row,) = await _rows(sessions)
    assert (row.state, row.attempts) == (DeliveryState.FAILED.value, 2)
    assert "ConnectError" in row.last_error


async def test_each_channel_the_customer_chose_gets_one_record(
    sessions: Sessions, smtp_server: tuple[MailBox, int]
) -> None:
    inbox, port = smtp_server
    endpoint, server = await webhook_endpoint([], then=200)
    async with server:
        await _prefer(
            sessions,
            Preferences(
                "c1",
                (Channel.LOG, Channel.EMAIL, Channel.WEBHOOK),
                email="c1@example.com",
                webhook_url=endpoint.url,
            ),
        )
        rejected = events_pb2.OrderRejected(
            order_id="ord-5", customer_id="c1", reason="OUT_OF_STOCK", reason_detail="SKU-9"
        )
        for _ in range(3):
            await _handle(sessions, _event(rejected, "ev-rejected-1"))
        settings = _settings(smtp_port=port)
        async with httpx.AsyncClient() as http:
            worker = DeliveryWorker(sessions, build_senders(settings, http), retry_policy(settings))
            await _deliver_all(worker, sessions)

    rows = await _rows(sessions)
    assert sorted(r.channel for r in rows) == ["EMAIL", "LOG", "WEBHOOK"]
    assert {(r.state, r.attempts) for r in rows} == {(DeliveryState.SENT.value, 1)}
    assert len(inbox.messages) == 1
    assert len(endpoint.requests) == 1
    assert "an item is out of stock (OUT_OF_STOCK): SKU-9" in inbox.messages[0].get_content()


async def test_workers_side_by_side_send_each_delivery_once(sessions: Sessions) -> None:
    sent: list[str] = []

    class Recording:
        async def send(self, message: Outgoing) -> None:
            await asyncio.sleep(0)  # let the other workers run meanwhile
            sent.append(message.notification_id)

    for i in range(30):
        await _handle(sessions, _event(_confirmed(f"ord-{i}", customer_id=f"c{i}"), f"ev-{i}"))
    workers = [
        DeliveryWorker(
            sessions, {Channel.LOG: Recording()}, retry_policy(_settings()), batch_size=4
        )
        for _ in range(3)
    ]
    for _ in range(100):
        await asyncio.gather(*(w.run_once() for w in workers))
        if await _pending(sessions) == 0:
            break
    rows = await _rows(sessions)
    assert len(rows) == 30
    assert sorted(sent) == sorted(r.notification_id for r in rows)  # each exactly once
    assert {(r.state, r.attempts) for r in rows} == {(DeliveryState.SENT.value, 1)}


async def test_a_delivery_whose_worker_died_is_sent_after_its_claim_expires(
    sessions: Sessions,
) -> None:
    await _handle(sessions, _event(_confirmed("ord-1"), "ev-orphan"))
    now = datetime.now(UTC)
    async with sessions.begin() as session:  # a worker claims it, then dies before recording
        (orphan,) = await NotificationStore(session).claim_due(
            "dead-worker", now, now + timedelta(seconds=60), 10
        )

    sent: list[str] = []

    class Recording:
        async def send(self, message: Outgoing) -> None:
            sent.append(message.notification_id)

    senders = {Channel.LOG: Recording()}
    assert await DeliveryWorker(sessions, senders, retry_policy(_settings())).run_once() == 0
    later = DeliveryWorker(
        sessions, senders, retry_policy(_settings()), clock=lambda: now + timedelta(seconds=61)
    )
    assert await later.run_once() == 1
    assert sent == [orphan.notification_id]

    async with sessions.begin() as session:  # the dead worker's late word changes nothing
        assert not await NotificationStore(session).record_outcomes(
            "dead-worker", {orphan.notification_id: (Sent(1, now), "")}
        )
    (row,) = await _rows(sessions)
    assert (row.state, row.attempts) == (DeliveryState.SENT.value, 1)


async def test_the_running_service_delivers_to_the_log_by_default(
    sessions: Sessions, any_database: str
) -> None:
    async with (
        running_service(
            load_service("notification"), any_database, delivery_interval_s=0.02
        ) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        refunded = events_pb2.PaymentRefunded(
            payment_id="pay-1",
            order_id="ord-1",
            customer_id="c-default",
            amount=money_pb2.Money(amount_minor=500, currency="JPY"),
        )
        await _handle(sessions, _event(refunded, "ev-refund-1"))
        for _ in range(500):
            reply = await stub.ListNotifications(
                pb.ListNotificationsRequest(customer_id="c-default")
            )
            if [n.state for n in reply.notifications] == [pb.DELIVERY_STATE_SENT]:
                break
            await asyncio.sleep(0.02)
        (listed,) = reply.notifications
        assert (listed.channel, listed.state, listed.attempts) == (
            pb.CHANNEL_LOG,
            pb.DELIVERY_STATE_SENT,
            1,
        )
        assert listed.subject == "Refund for order ord-1"


async def test_a_batch_records_each_customers_channels_in_as_many_statements_as_one_event(
    sessions: Sessions,
) -> None:
    await _prefer(sessions, Preferences("c1", (Channel.LOG, Channel.EMAIL), email="c1@x.com"))
    await _prefer(sessions, Preferences("c2", (Channel.WEBHOOK,), webhook_url="https://h.x/c2"))
    created = events_pb2.OrderCreated(order_id="ord-2", customer_id="c2", currency="EUR")
    batch = [
        _event(_confirmed("ord-1", "c1"), "ev-b1"),
        _event(created, "ev-b2"),  # not customer-facing
        _event(_confirmed("ord-2", "c2"), "ev-b3"),
        _event(_confirmed("ord-3", "c3"), "ev-b4"),  # c3 saved no preferences: the log
        _event(_confirmed("ord-1", "c1"), "ev-b1"),  # the same event twice in one batch
    ]
    alone = await _statements_to_handle(sessions, [_event(_confirmed("ord-0", "c0"), "ev-b0")])
    together = await _statements_to_handle(sessions, batch)
    assert together == alone == 2  # the preferences read, the deliveries insert
    assert await _statements_to_handle(sessions, batch) == 2  # again: nothing new
    rows = await _rows(sessions)
    assert sorted((r.event_id, r.channel, r.recipient) for r in rows) == [
        ("ev-b0", "LOG", ""),
        ("ev-b1", "EMAIL", "c1@x.com"),
        ("ev-b1", "LOG", ""),
        ("ev-b3", "WEBHOOK", "https://h.x/c2"),
        ("ev-b4", "LOG", ""),
    ]


async def test_each_delivery_of_a_batch_continues_its_own_events_trace(
    sessions: Sessions,
) -> None:
    tracer = TracerProvider().get_tracer("test")
    spans = [tracer.start_span(f"process {i}") for i in range(3)]
    batch = [
        replace(
            _event(_confirmed(f"ord-{i}", f"c{i}"), f"ev-t{i}"),
            trace_context=trace.set_span_in_context(span),
        )
        for i, span in enumerate(spans)
    ]
    await _handle(sessions, *batch)
    contexts = [span.get_span_context() for span in spans]
    assert {r.event_id: r.traceparent for r in await _rows(sessions)} == {
        f"ev-t{i}": f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"
        for i, c in enumerate(contexts)
    }
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left attached


async def _pass_with_every_outcome(sessions: Sessions, orders: int) -> tuple[int, list[Row[Any]]]:
    """One worker pass over ``orders`` confirmed orders' log deliveries, a third of them
    sent, a third failing for a retry and a third failing for good; the statements it
    ran, and the rows as it left them."""
    await _handle(sessions, *(_event(_confirmed(f"ord-{i}"), f"ev-{i}") for i in range(orders)))
    fate = {f"ord-{i}": i % 3 for i in range(orders)}

    class ByOrder:
        async def send(self, message: Outgoing) -> None:
            if fate[message.order_id]:
                raise DeliveryFailed(f"refused {message.order_id}")

    async with sessions.begin() as session:  # the give-ups: already on their last try
        await session.execute(
            deliveries.update()
            .where(deliveries.c.order_id.in_([o for o, f in fate.items() if f == 2]))
            .values(attempts=2)
        )
    worker = DeliveryWorker(
        sessions, {Channel.LOG: ByOrder()}, retry_policy(_settings(delivery_max_attempts=3))
    )
    with statements(sessions.engine) as sent:
        assert await worker.run_once() == orders
    return len(sent), sorted(await _rows(sessions), key=lambda r: int(r.order_id[4:]))


@pytest.mark.parametrize("orders", [3, 30])
async def test_a_pass_records_its_outcomes_in_one_statement_per_kind_however_many(
    sessions: Sessions, orders: int
) -> None:
    statements, rows = await _pass_with_every_outcome(sessions, orders)
    if sessions.engine.dialect.name == "postgresql":
        # The claim: select, update, read back. The outcomes: sent, retried, given up.
        # (SQLite has no UPDATE ... FROM unnest: a statement per row, as before.)
        assert statements == 3 + 3
    for i, row in enumerate(rows):
        assert (row.claimed_by, row.claimed_until) == ("", None)
        match i % 3:
            case 0:
                assert (row.state, row.attempts, row.last_error) == ("SENT", 1, "")
                assert row.delivered_at is not None
            case 1:
                assert (row.state, row.attempts) == ("PENDING", 1)
                assert row.last_error == f"refused ord-{i}"
                assert row.next_attempt_at is not None
                assert row.delivered_at is None
            case 2:
                assert (row.state, row.attempts) == ("FAILED", 3)
                assert row.last_error == f"refused ord-{i}"


class Held:
    """A channel that keeps the sends of the orders in ``held`` until ``let_go`` is set
    (a webhook answering after its whole timeout) and takes every other at once."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)
        self.let_go = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, message: Outgoing) -> None:
        if message.order_id in self.held:
            await self.let_go.wait()
        self.sent.append(message.order_id)


async def _states(sessions: Sessions) -> dict[str, str]:
    return {r.order_id: r.state for r in await _rows(sessions)}


async def _confirmed_orders(sessions: Sessions, count: int) -> None:
    await _handle(
        sessions,
        *(_event(_confirmed(f"ord-{i}", customer_id=f"c{i}"), f"ev-{i}") for i in range(count)),
    )


def _held_worker(sessions: Sessions, *held: str, **options: Any) -> tuple[Held, DeliveryWorker]:
    """A worker whose one channel holds the sends of the ``held`` orders."""
    channel = Held(*held)
    worker = DeliveryWorker(sessions, {Channel.LOG: channel}, retry_policy(_settings()), **options)
    return channel, worker


@contextlib.asynccontextmanager
async def _running(worker: DeliveryWorker) -> AsyncIterator[asyncio.Task[None]]:
    """The worker's own loop (a minute between passes that find less than a batch),
    stopped on the way out."""
    running = asyncio.create_task(
        run_periodically("notification-delivery", worker.deliver_due, 60, again=worker.behind)
    )
    try:
        yield running
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 5)
        await worker.close()


async def test_a_slow_receiver_holds_up_no_other_delivery_and_is_recorded_when_it_answers(
    sessions: Sessions,
) -> None:
    await _confirmed_orders(sessions, 3)
    channel, worker = _held_worker(sessions, "ord-1", pass_wait_s=0.2)
    assert await asyncio.wait_for(worker.run_once(), 5) == 3
    assert await _states(sessions) == {"ord-0": "SENT", "ord-1": "PENDING", "ord-2": "SENT"}
    assert await worker.run_once() == 0  # still claimed by its pass: not sent twice

    channel.let_go.set()
    for _ in range(100):  # bounded: the late send is recorded by a task of its own
        if (await _states(sessions))["ord-1"] == "SENT":
            break
        await asyncio.sleep(0.05)
    (late,) = [r for r in await _rows(sessions) if r.order_id == "ord-1"]
    assert (late.state, late.attempts, late.claimed_by) == ("SENT", 1, "")
    assert sorted(channel.sent) == ["ord-0", "ord-1", "ord-2"]


async def test_a_pass_waits_while_as_many_sends_as_allowed_are_still_out(
    sessions: Sessions,
) -> None:
    await _confirmed_orders(sessions, 2)
    channel, worker = _held_worker(
        sessions, "ord-0", batch_size=1, pass_wait_s=0.05, max_sends_out=1
    )
    assert await worker.run_once() == 1  # ord-0, still out
    next_pass = asyncio.create_task(worker.run_once())
    await asyncio.sleep(0.3)
    assert not next_pass.done()  # one send out is the bound: it waits for it
    channel.let_go.set()
    assert await asyncio.wait_for(next_pass, 5) == 1
    assert channel.sent[0] == "ord-0"


async def test_a_backlog_is_sent_pass_after_pass_not_one_batch_per_interval(
    sessions: Sessions,
) -> None:
    await _confirmed_orders(sessions, 25)
    channel, worker = _held_worker(sessions, batch_size=10)
    # One pass per minute would leave 15 PENDING for two minutes; full passes go at once.
    async with _running(worker):
        for _ in range(200):
            if await _pending(sessions) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _pending(sessions) == 0
    assert len(channel.sent) == 25


async def test_a_stopped_worker_leaves_its_sends_still_out_claimed_for_another(
    sessions: Sessions,
) -> None:
    await _confirmed_orders(sessions, 1)
    channel, worker = _held_worker(sessions, "ord-0", pass_wait_s=0.05)
    async with _running(worker):
        for _ in range(100):
            if (await _rows(sessions))[0].claimed_by:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # past the pass's wait: the send is out
    (row,) = await _rows(sessions)
    assert (row.state, row.attempts) == ("PENDING", 0)  # not counted, its claim lapses
    assert row.claimed_by != ""
    assert channel.sent == []


async def test_the_deliveries_due_and_how_late_the_first_is_are_on_metrics(
    sessions: Sessions,
) -> None:
    from prometheus_client import REGISTRY

    await _confirmed_orders(sessions, 2)  # due now
    later = datetime.now(UTC) + timedelta(seconds=30)
    # Neither is sent while we look.
    _, worker = _held_worker(sessions, "ord-0", "ord-1", pass_wait_s=0.05, clock=lambda: later)
    async with _running(worker):
        for _ in range(100):
            if REGISTRY.get_sample_value("ordermesh_notifications_due") == 2:
                break
            await asyncio.sleep(0.05)
        assert REGISTRY.get_sample_value("ordermesh_notifications_due") == 2
        late_s = REGISTRY.get_sample_value("ordermesh_notifications_oldest_due_seconds")
        assert late_s is not None
        assert 29 <= late_s <= 40
