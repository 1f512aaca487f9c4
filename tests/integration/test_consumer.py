"""The generic consumer against the real broker and the real PostgreSQL: inbox dedup,
retries, dead letters and their replay."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import Column, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.cloudevents import build_headers, header_map
from ordermesh_messaging.consumer import EventConsumer
from ordermesh_messaging.dlq import list_dead_letters, replay_dead_letters
from ordermesh_messaging.inbound import InboundEvent
from ordermesh_messaging.inbox import Inbox, inbox_table
from ordermesh_messaging.settings import ConsumerSettings
from ordermesh_platform.db import Transactions, create_engine
from tests.support.broker import Broker, read_topic, running_broker

pytestmark = pytest.mark.integration

metadata = MetaData()
inbox = inbox_table(metadata)
effects = Table("effects", metadata, Column("event_id", String(64), nullable=False))


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with running_broker() as b:
        yield b


@pytest.fixture
async def sessions(pg_database: str) -> AsyncIterator[Transactions]:
    from ordermesh_platform.db import ensure_database

    await ensure_database(pg_database)
    engine = create_engine(pg_database)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield Transactions(engine)
    await engine.dispose()


class Recorder:
    """A handler whose effect is a row per handling; it can be told to fail."""

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times

    async def handle(self, session: AsyncConnection, event: InboundEvent) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("handler bug")
        await session.execute(effects.insert().values(event_id=event.event_id))


async def _produce(broker: Broker, topic: str, payloads: list[tuple[str, bytes]]) -> list[str]:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False
    )
    await producer.start()
    ids = []
    try:
        for event_type, value in payloads:
            event_id = str(uuid.uuid4())
            ids.append(event_id)
            headers = build_headers(
                event_id, event_type, "test", __import__("datetime").datetime.now()
            )
            await producer.send_and_wait(topic, value=value, key=b"o-1", headers=headers)
    finally:
        await producer.stop()
    return ids


def _consumer(
    broker: Broker,
    topic: str,
    handler: Recorder,
    sessions: Transactions,
    group: str,
) -> EventConsumer:
    settings = ConsumerSettings.model_validate(
        {
            "kafka_bootstrap": broker.bootstrap,
            "consumer_group": group,
            "consumer_max_attempts": 3,
            "consumer_backoff_s": 0.01,
        }
    )
    return EventConsumer("test", [topic], handler.handle, sessions, Inbox(inbox, "test"), settings)


async def _effects(sessions: Transactions) -> list[str]:
    async with sessions() as session:
        return list((await session.execute(select(effects.c.event_id))).scalars())


async def _run_until(consumer: EventConsumer, done: object, timeout_s: float = 30) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(int(timeout_s * 10)):  # bounded
            if done():  # type: ignore[operator]
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"consumer did not get there: {consumer.stats}")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _valid() -> tuple[str, bytes]:
    return "ordermesh.events.v1.OrderConfirmed", events_pb2.OrderConfirmed(
        order_id="o-1"
    ).SerializeToString()


async def test_replaying_a_topic_from_the_start_changes_nothing(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await _produce(broker, topic, [_valid() for _ in range(5)])
    first = _consumer(broker, topic, Recorder(), sessions, group="g1")
    await _run_until(first, lambda: first.stats.handled == 5)
    # Another group starts at offset 0: every record arrives again.
    again = _consumer(broker, topic, Recorder(), sessions, group="g2")
    await _run_until(again, lambda: again.stats.duplicates == 5)
    assert sorted(await _effects(sessions)) == sorted(ids)


async def test_a_failing_handler_is_retried_and_takes_effect_once(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await _produce(broker, topic, [_valid()])
    consumer = _consumer(broker, topic, Recorder(fail_times=2), sessions, group="g")
    await _run_until(consumer, lambda: consumer.stats.handled == 1)
    assert consumer.stats.failed_attempts == 2
    assert consumer.stats.dead_lettered == 0
    assert await _effects(sessions) == ids


async def test_poison_goes_to_the_dlq_the_consumer_goes_on_and_replay_brings_it_back(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    poison = ("ordermesh.events.v1.OrderConfirmed", b"\xff\xfe not protobuf")
    ids = await _produce(broker, topic, [poison, _valid()])
    consumer = _consumer(broker, topic, Recorder(), sessions, group="g")
    await _run_until(
        consumer, lambda: consumer.stats.handled == 1 and consumer.stats.dead_lettered == 1
    )
    assert await _effects(sessions) == ids[1:]
    letters = await list_dead_letters(broker.bootstrap, [f"{topic}.dlq"])
    assert [(x.event_id, x.reason, x.original_topic) for x in letters] == [
        (ids[0], "undecodable", topic)
    ]
    replayed = await replay_dead_letters(broker.bootstrap, [f"{topic}.dlq"])
    assert [x.event_id for x in replayed] == [ids[0]]
    assert await replay_dead_letters(broker.bootstrap, [f"{topic}.dlq"]) == []  # once only
    back = [
        r
        for r in await read_topic(broker.bootstrap, topic, expect=3)
        if header_map(r.headers)["ce_id"].decode() == ids[0]
    ]
    assert len(back) == 2  # the original and its replay
    assert "ordermesh_dlq_reason" not in header_map(back[1].headers)


async def test_a_handler_that_keeps_failing_dead_letters_with_its_reason(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await _produce(broker, topic, [_valid(), _valid()])
    consumer = _consumer(broker, topic, Recorder(fail_times=3), sessions, group="g")
    await _run_until(
        consumer, lambda: consumer.stats.dead_lettered == 1 and consumer.stats.handled == 1
    )
    letters = await list_dead_letters(broker.bootstrap, [f"{topic}.dlq"])
    assert [(x.event_id, x.reason) for x in letters] == [(ids[0], "handler-failed")]
    assert "handler bug" in letters[0].error
    # Fixed (the handler no longer fails): the replayed message takes effect.
    await replay_dead_letters(broker.bootstrap, [f"{topic}.dlq"])
    fixed = _consumer(broker, topic, Recorder(), sessions, group="g")
    await _run_until(fixed, lambda: fixed.stats.handled == 1)
    assert sorted(await _effects(sessions)) == sorted(ids)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(inbox)) == 2
