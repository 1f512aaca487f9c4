"""The generic consumer against the real broker and the real PostgreSQL: inbox dedup,
retries, dead letters and their replay (batches: test_consumer_batches.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.cloudevents import build_headers, header_map
from ordermesh_messaging.consumer import EventConsumer, Handler
from ordermesh_messaging.dlq import list_dead_letters, replay_dead_letters
from ordermesh_messaging.inbound import InboundEvent
from ordermesh_messaging.inbox import Inbox, inbox_table
from ordermesh_messaging.producer import new_producer
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
    """A handler whose effect is a row per handled event; the events at some offsets
    fail a number of times (every batch holding one of them fails)."""

    def __init__(self, failures: dict[int, int] | None = None) -> None:
        self.failures = dict(failures or {})  # offset -> handlings of it that still fail
        self.batches: list[list[str]] = []  # the event ids of each call

    async def handle(self, session: AsyncConnection, events: Sequence[InboundEvent]) -> None:
        self.batches.append([event.event_id for event in events])
        for event in events:
            if self.failures.get(event.offset, 0) > 0:
                self.failures[event.offset] -= 1
                raise RuntimeError("handler bug")
        await session.execute(effects.insert(), [{"event_id": e.event_id} for e in events])


async def produce(
    broker: Broker,
    topic: str,
    payloads: list[tuple[str, bytes]],
    ids: Sequence[str] = (),
    traceparents: Sequence[str] = (),
) -> list[str]:
    """Send the payloads on one partition (one key); the event ids sent, ``ids`` or new."""
    producer = new_producer(broker.bootstrap)
    await producer.start()
    event_ids = list(ids) or [str(uuid.uuid4()) for _ in payloads]
    parents = list(traceparents) or ["" for _ in payloads]
    try:
        for event_id, parent, (event_type, value) in zip(event_ids, parents, payloads, strict=True):
            headers = build_headers(event_id, event_type, "test", datetime.now(), parent)
            await producer.send_and_wait(topic, value=value, key=b"o-1", headers=headers)
    finally:
        await producer.stop()
    return event_ids


def consumer_for(
    broker: Broker,
    topic: str,
    handler: Handler,
    sessions: Transactions,
    group: str,
    consumer_inbox: Inbox | None = None,
    wanted: Callable[[InboundEvent], bool] = lambda event: True,
    wanted_type: Callable[[str, str], bool] = lambda topic, event_type: True,
    deduplicated: Callable[[InboundEvent], bool] = lambda event: True,
) -> EventConsumer:
    settings = ConsumerSettings.model_validate(
        {
            "kafka_bootstrap": broker.bootstrap,
            "consumer_group": group,
            "consumer_max_attempts": 3,
            "consumer_backoff_s": 0.01,
            "consumer_session_timeout_s": 2,  # the local broker holds a join for half of it
        }
    )
    chosen_inbox = consumer_inbox or Inbox(inbox, "test")
    return EventConsumer(
        "test", [topic], handler, sessions, chosen_inbox, settings, wanted, wanted_type,
        deduplicated,
    )  # fmt: skip


async def effects_of(sessions: Transactions) -> list[str]:
    async with sessions() as session:
        return list((await session.execute(select(effects.c.event_id))).scalars())


async def run_until(
    consumer: EventConsumer, done: Callable[[], bool], timeout_s: float = 30
) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(int(timeout_s * 10)):  # bounded
            if done():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"consumer did not get there: {consumer.stats}")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def valid() -> tuple[str, bytes]:
    return "ordermesh.events.v1.OrderConfirmed", events_pb2.OrderConfirmed(
        order_id="o-1"
    ).SerializeToString()


async def test_replaying_a_topic_from_the_start_changes_nothing(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await produce(broker, topic, [valid() for _ in range(5)])
    first = consumer_for(broker, topic, Recorder().handle, sessions, group="g1")
    await run_until(first, lambda: first.stats.handled == 5)
    # Another group starts at offset 0: every record arrives again.
    again = consumer_for(broker, topic, Recorder().handle, sessions, group="g2")
    await run_until(again, lambda: again.stats.duplicates == 5)
    assert sorted(await effects_of(sessions)) == sorted(ids)


async def test_a_failing_handler_is_retried_and_takes_effect_once(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    ids = await produce(broker, topic, [valid()])
    consumer = consumer_for(broker, topic, Recorder({0: 2}).handle, sessions, group="g")
    await run_until(consumer, lambda: consumer.stats.handled == 1)
    assert consumer.stats.failed_attempts == 2
    assert consumer.stats.dead_lettered == 0
    assert await effects_of(sessions) == ids


async def test_poison_goes_to_the_dlq_the_consumer_goes_on_and_replay_brings_it_back(
    broker: Broker, sessions: Transactions
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    poison = ("ordermesh.events.v1.OrderConfirmed", b"\xff\xfe not protobuf")
    ids = await produce(broker, topic, [poison, valid()])
    consumer = consumer_for(broker, topic, Recorder().handle, sessions, group="g")
    await run_until(
        consumer, lambda: consumer.stats.handled == 1 and consumer.stats.dead_lettered == 1
    )
    assert await effects_of(sessions) == ids[1:]
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
    ids = await produce(broker, topic, [valid(), valid()])
    consumer = consumer_for(broker, topic, Recorder({0: 99}).handle, sessions, group="g")
    await run_until(
        consumer, lambda: consumer.stats.dead_lettered == 1 and consumer.stats.handled == 1
    )
    letters = await list_dead_letters(broker.bootstrap, [f"{topic}.dlq"])
    assert [(x.event_id, x.reason) for x in letters] == [(ids[0], "handler-failed")]
    assert "handler bug" in letters[0].error
    # Fixed (the handler no longer fails): the replayed message takes effect.
    await replay_dead_letters(broker.bootstrap, [f"{topic}.dlq"])
    fixed = consumer_for(broker, topic, Recorder().handle, sessions, group="g")
    await run_until(fixed, lambda: fixed.stats.handled == 1)
    assert sorted(await effects_of(sessions)) == sorted(ids)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(inbox)) == 2
