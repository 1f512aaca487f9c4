"""The consumer handles each polled batch in one transaction, against the real broker and
the real PostgreSQL: its cost does not grow with the batch, duplicates take effect once,
a poison event dead-letters alone, and offsets move only after the transaction.

``EventConsumer.process`` is what the loop does with one poll's records; the tests call it
with a topic's records to make a batch exactly what they say it is."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import ordermesh_messaging.consumer as consumer_module
from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_cli.registry import load_service
from ordermesh_messaging.consumer import EventConsumer
from ordermesh_messaging.dlq import list_dead_letters
from ordermesh_messaging.inbound import InboundEvent
from ordermesh_messaging.inbox import Inbox
from ordermesh_notification import store as notification_store
from ordermesh_notification.handler import NotificationHandler
from ordermesh_platform.db import Transactions, create_engine, ensure_database
from ordermesh_platform.migrations import upgrade_to_head
from tests.integration.test_consumer import (
    Recorder,
    consumer_for,
    effects_of,
    inbox,
    metadata,
    produce,
    run_until,
    valid,
)
from tests.support.broker import Broker, read_topic, running_broker

pytestmark = pytest.mark.integration

EUR = money_pb2.Money(amount_minor=500, currency="EUR")
UNDECODABLE = ("ordermesh.events.v1.OrderConfirmed", b"\xff\xfe not protobuf")


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with running_broker() as b:
        yield b


@pytest.fixture
async def sessions(pg_database: str) -> AsyncIterator[Transactions]:
    """The generic consumer's tables (its inbox, the recorder's effects)."""
    await ensure_database(pg_database)
    engine = create_engine(pg_database)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield Transactions(engine)
    await engine.dispose()


@pytest.fixture
async def notification_sessions(pg_database: str) -> AsyncIterator[Transactions]:
    """notification-service's schema, migrated."""
    spec = load_service("notification")
    await upgrade_to_head(spec.migrations, pg_database, spec.name)
    engine = create_engine(pg_database)
    yield Transactions(engine)
    await engine.dispose()


def _order_events(order: int) -> list[tuple[str, bytes]]:
    """What one order publishes; only OrderConfirmed is customer-facing."""
    o, c = f"ord-{order}", f"c-{order % 3}"
    payloads = [
        events_pb2.OrderCreated(order_id=o, customer_id=c, currency="EUR"),
        events_pb2.StockReserved(order_id=o),
        events_pb2.PaymentAuthorized(payment_id="p", order_id=o, customer_id=c, amount=EUR),
        events_pb2.OrderConfirmed(order_id=o, customer_id=c, total=EUR, payment_id="p"),
        events_pb2.PaymentCaptured(payment_id="p", order_id=o, customer_id=c, amount=EUR),
    ]
    return [(p.DESCRIPTOR.full_name, p.SerializeToString()) for p in payloads]


def _notification_consumer(broker: Broker, topic: str, sessions: Transactions) -> EventConsumer:
    notification_inbox = Inbox(notification_store.inbox, "notification")
    handler = NotificationHandler().handle
    return consumer_for(broker, topic, handler, sessions, "g", notification_inbox)


@asynccontextmanager
async def _started(consumer: EventConsumer) -> AsyncIterator[EventConsumer]:
    """Its broker clients up (the dead-letter producer), without its polling loop."""
    await consumer._start()
    try:
        yield consumer
    finally:
        await consumer._stop()


async def _records(broker: Broker, topic: str, count: int) -> list[ConsumerRecord]:
    records = await read_topic(broker.bootstrap, topic, expect=count)
    assert len(records) == count
    return sorted(records, key=lambda r: r.offset)


class _Counted:
    """Every statement and transaction boundary the engine sends while it listens."""

    NAMES = ("before_cursor_execute", "begin", "commit")

    def __init__(self, engine: AsyncEngine) -> None:
        self.sync_engine = engine.sync_engine
        self.count = 0

    def _seen(self, *_: Any, **__: Any) -> None:
        self.count += 1

    def __enter__(self) -> _Counted:
        for name in self.NAMES:
            event.listen(self.sync_engine, name, self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        for name in self.NAMES:
            event.remove(self.sync_engine, name, self._seen)


async def _statements_for(
    broker: Broker, sessions: Transactions, orders: int
) -> tuple[int, EventConsumer]:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    events = [e for order in range(orders) for e in _order_events(order)]
    await produce(broker, topic, events)
    records = await _records(broker, topic, len(events))
    consumer = _notification_consumer(broker, topic, sessions)
    with _Counted(sessions.engine) as counted:
        await consumer.process(records)
    assert consumer.stats.handled == len(events)
    return counted.count, consumer


async def test_a_polled_batch_costs_the_same_statements_for_5_or_200_events(
    broker: Broker, notification_sessions: Transactions
) -> None:
    one_order, _ = await _statements_for(broker, notification_sessions, orders=1)
    forty_orders, _ = await _statements_for(broker, notification_sessions, orders=40)
    # BEGIN, the inbox claim, the preferences read, the deliveries insert, COMMIT.
    assert one_order == forty_orders == 5
    async with notification_sessions() as session:
        rows = (await session.execute(select(notification_store.deliveries))).all()
    assert len(rows) == 41  # one OrderConfirmed per order, the log channel


async def test_events_the_handler_does_not_want_cost_no_inbox_row_and_no_statement(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    confirmed = events_pb2.OrderConfirmed.DESCRIPTOR.full_name
    ids = await produce(broker, topic, _order_events(0) + _order_events(1))
    records = await _records(broker, topic, len(ids))
    recorder = Recorder()
    consumer = consumer_for(
        broker, topic, recorder.handle, sessions, "g", wanted=lambda e: e.event_type == confirmed
    )
    await consumer.process(records)
    assert recorder.batches == [[ids[3], ids[8]]]  # the two OrderConfirmed only
    async with sessions() as session:
        claimed = (await session.execute(select(inbox.c.event_id))).scalars().all()
    assert sorted(claimed) == sorted([ids[3], ids[8]])
    passed_over = [r for n, r in enumerate(records) if n not in (3, 8)]
    with _Counted(sessions.engine) as counted:
        await consumer.process(passed_over)  # a poll of events no one wants
    assert counted.count == 0
    assert consumer.stats.handled == 2


async def test_duplicates_inside_a_batch_and_across_batches_take_effect_once(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    await produce(broker, topic, [valid() for _ in range(4)], ids=[a, b, a, c])
    records = await _records(broker, topic, 4)
    recorder = Recorder()
    consumer = consumer_for(broker, topic, recorder.handle, sessions, group="g")
    await consumer.process(records)
    assert (consumer.stats.handled, consumer.stats.duplicates) == (3, 1)
    assert recorder.batches == [[a, b, c]]  # the handler saw each event once
    await consumer.process(records)  # the same poll again: a redelivery
    assert (consumer.stats.handled, consumer.stats.duplicates) == (3, 5)
    assert recorder.batches == [[a, b, c]]  # nothing new: the handler was not called
    assert sorted(await effects_of(sessions)) == sorted([a, b, c])


async def test_a_poison_event_in_a_batch_dead_letters_alone_while_its_neighbours_are_handled(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    payloads = [valid(), valid(), valid(), valid(), UNDECODABLE, valid()]
    ids = await produce(broker, topic, payloads)
    records = await _records(broker, topic, len(ids))
    recorder = Recorder({2: 99})  # offset 2 always fails
    consumer = consumer_for(broker, topic, recorder.handle, sessions, group="g")
    async with _started(consumer):
        await consumer.process(records)
    decodable = [i for n, i in enumerate(ids) if n != 4]
    assert recorder.batches[0] == decodable  # first tried together
    assert recorder.batches[1:] == [[i] for i in decodable[:2]] + [[ids[2]]] * 3 + [
        [i] for i in decodable[3:]
    ]  # then one by one: the poison its three attempts
    assert consumer.stats.handled == 4
    assert consumer.stats.failed_attempts == 3  # the failed batch is no event's attempt
    assert consumer.stats.dead_lettered == 2
    assert sorted(await effects_of(sessions)) == sorted(
        i for n, i in enumerate(ids) if n not in (2, 4)
    )
    letters = await list_dead_letters(broker.bootstrap, [f"{topic}.dlq"])
    assert [(x.event_id, x.reason) for x in letters] == [
        (ids[4], "undecodable"),  # before the batch
        (ids[2], "handler-failed"),
    ]


async def test_a_type_no_handler_reads_is_passed_over_undecoded(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    # An undecodable record of another type: dead-lettered if it were decoded.
    unread = ("ordermesh.events.v1.PaymentCaptured", b"\xff\xfe not protobuf")
    ids = await produce(broker, topic, [valid(), unread, valid()])
    recorder = Recorder()
    consumer = consumer_for(
        broker, topic, recorder.handle, sessions, group="g",
        wanted_type=lambda _, event_type: event_type == valid()[0],
    )  # fmt: skip
    async with _started(consumer):
        await consumer.process(await _records(broker, topic, 3))
    assert recorder.batches == [[ids[0], ids[2]]]
    assert consumer.stats.dead_lettered == 0
    assert await list_dead_letters(broker.bootstrap, [f"{topic}.dlq"]) == []


async def test_events_of_an_idempotent_handler_take_no_inbox_row(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await produce(broker, topic, [valid(), valid()])
    records = await _records(broker, topic, 2)
    recorder = Recorder()
    consumer = consumer_for(
        broker, topic, recorder.handle, sessions, group="g", deduplicated=lambda _: False
    )
    async with _started(consumer):
        await consumer.process(records)
        await consumer.process(records)  # redelivered: the handler itself must shrug
    assert recorder.batches == [ids, ids]
    async with sessions() as session:
        assert (await session.execute(select(inbox.c.event_id))).all() == []
    assert (consumer.stats.handled, consumer.stats.duplicates) == (4, 0)


class _Outage(Recorder):
    """The database goes away during the first batch."""

    async def handle(self, session: AsyncConnection, events: Sequence[InboundEvent]) -> None:
        await super().handle(session, events)
        if len(self.batches) == 1:
            raise ConnectionError("database away")


async def test_a_database_outage_during_a_batch_is_waited_out_and_the_batch_retried_whole(
    broker: Broker, sessions: Transactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "MAX_BACKOFF_S", 0.01)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await produce(broker, topic, [valid() for _ in range(3)])
    recorder = _Outage()
    consumer = consumer_for(broker, topic, recorder.handle, sessions, group="g")
    await consumer.process(await _records(broker, topic, 3))
    assert recorder.batches == [ids, ids]
    assert (consumer.stats.handled, consumer.stats.failed_attempts) == (3, 0)
    assert consumer.stats.dead_lettered == 0
    assert sorted(await effects_of(sessions)) == sorted(ids)


class _Stuck(Recorder):
    """Writes its effects, then never finishes its transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = asyncio.Event()
        self.partition = -1

    async def handle(self, session: AsyncConnection, events: Sequence[InboundEvent]) -> None:
        await super().handle(session, events)
        self.partition = events[0].partition
        self.inside.set()
        await asyncio.Event().wait()


async def _committed(broker: Broker, group: str, partition: TopicPartition) -> int | None:
    reader = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
    )
    await reader.start()
    try:
        offset: int | None = await reader.committed(partition)
        return offset
    finally:
        await reader.stop()


async def test_offsets_are_committed_only_after_the_transaction(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await produce(broker, topic, [valid() for _ in range(4)])
    stuck = _Stuck()
    consumer = consumer_for(broker, topic, stuck.handle, sessions, group="g")
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(stuck.inside.wait(), timeout=30)
        partition = TopicPartition(topic, stuck.partition)
        assert consumer._consumer is not None
        assert await consumer._consumer.committed(partition) is None  # inside: not yet
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Stopped inside the transaction: it rolled back and the offsets stayed.
    assert await effects_of(sessions) == []
    assert await _committed(broker, "g", partition) is None
    again = consumer_for(broker, topic, Recorder().handle, sessions, group="g")
    await run_until(again, lambda: again.stats.handled == 4)
    assert sorted(await effects_of(sessions)) == sorted(ids)
    for _ in range(50):  # the commit follows the transaction: wait for it (bounded)
        if await _committed(broker, "g", partition) == 4:
            break
        await asyncio.sleep(0.1)
    assert await _committed(broker, "g", partition) == 4


def _span_of(spans: Sequence[ReadableSpan], event_id: str) -> ReadableSpan:
    (span,) = [s for s in spans if (s.attributes or {}).get("messaging.message.id") == event_id]
    return span


def _traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


@pytest.fixture
def recorded_spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """What the consumer's tracer records."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(consumer_module, "tracer", lambda: provider.get_tracer("test"))
    return exporter


async def _consume_confirmed_orders(
    broker: Broker, sessions: Transactions, traceparents: Sequence[str]
) -> tuple[str, list[str], dict[str, str]]:
    """One OrderConfirmed per traceparent, produced with it and consumed in one batch by
    notification's consumer: (topic, event ids, each delivery's traceparent by event)."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    confirmed = [
        events_pb2.OrderConfirmed(order_id=f"ord-{i}", customer_id=f"c{i}", total=EUR)
        for i in range(len(traceparents))
    ]
    ids = await produce(
        broker,
        topic,
        [(p.DESCRIPTOR.full_name, p.SerializeToString()) for p in confirmed],
        traceparents=list(traceparents),
    )
    consumer = _notification_consumer(broker, topic, sessions)
    await consumer.process(await _records(broker, topic, len(traceparents)))
    async with sessions() as session:
        rows = (await session.execute(select(notification_store.deliveries))).all()
    return topic, ids, {r.event_id: r.traceparent for r in rows}


async def test_each_event_of_a_batch_gets_a_consumer_span_its_deliveries_continue(
    broker: Broker,
    notification_sessions: Transactions,
    recorded_spans: InMemorySpanExporter,
    otlp_endpoint: Callable[[str], None],
) -> None:
    otlp_endpoint("http://127.0.0.1:4317")  # spans are exported: each event gets its own
    producers = [(uuid.uuid4().hex, uuid.uuid4().hex[:16]) for _ in range(3)]
    topic, ids, delivered = await _consume_confirmed_orders(
        broker, notification_sessions, [f"00-{t}-{s}-01" for t, s in producers]
    )
    spans = recorded_spans.get_finished_spans()
    assert [(s.name, s.kind.name) for s in spans] == [(f"process {topic}", "CONSUMER")] * 3
    for event_id, (trace_id, span_id) in zip(ids, producers, strict=True):
        parent = _span_of(spans, event_id).parent  # the producer's span, from the record
        assert parent is not None
        assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (trace_id, span_id)
    assert delivered == {event_id: _traceparent_of(_span_of(spans, event_id)) for event_id in ids}


async def test_with_no_endpoint_deliveries_continue_the_producers_trace_without_a_span(
    broker: Broker,
    notification_sessions: Transactions,
    recorded_spans: InMemorySpanExporter,
    otlp_endpoint: Callable[[str], None],
) -> None:
    otlp_endpoint("")
    traceparents = [f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" for _ in range(2)]
    _, ids, delivered = await _consume_confirmed_orders(broker, notification_sessions, traceparents)
    assert recorded_spans.get_finished_spans() == ()
    assert delivered == dict(zip(ids, traceparents, strict=True))
