"""Dead-letter topics: list what landed there, and replay it onto its original topic."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ordermesh_messaging.cloudevents import header_map
from ordermesh_messaging.consumer import DLQ_HEADERS
from ordermesh_messaging.events import TOPICS
from ordermesh_messaging.producer import new_producer
from ordermesh_messaging.reachability import kafka_errors
from ordermesh_messaging.topics import dlq_topic

REPLAY_GROUP = "ordermesh-dlq-replayer"
# The local broker's end offsets are not to be trusted: a topic is read until it has
# been quiet this long.
QUIET_S = 1.5


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: str
    event_id: str
    event_type: str
    reason: str
    error: str
    original_topic: str


def default_dlq_topics() -> list[str]:
    return [dlq_topic(t) for t in TOPICS.values()]


async def _read(consumer: AIOKafkaConsumer, limit: int, quiet_s: float) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    last = time.monotonic()
    while len(records) < limit and time.monotonic() - last < quiet_s:
        batch = await consumer.getmany(timeout_ms=200, max_records=limit - len(records))
        for items in batch.values():
            records.extend(items)
            last = time.monotonic()
    return records


def _partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


def _letter(record: ConsumerRecord) -> DeadLetter:
    h = header_map(record.headers)

    def text(name: str) -> str:
        return h.get(name, b"").decode(errors="replace")

    return DeadLetter(
        record.topic,
        record.partition,
        record.offset,
        (record.key or b"").decode(errors="replace"),
        text("ce_id"),
        text("ce_type"),
        text("ordermesh_dlq_reason"),
        text("ordermesh_dlq_error"),
        text("ordermesh_dlq_topic"),
    )


async def list_dead_letters(
    bootstrap: str, topics: Iterable[str], limit: int = 1000, quiet_s: float = QUIET_S
) -> list[DeadLetter]:
    """Every dead letter from the start of the topics (no group, nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        async with kafka_errors(bootstrap):
            await consumer.start()
        partitions = _partitions(consumer, topics)
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return [_letter(r) for r in await _read(consumer, limit, quiet_s)]
    finally:
        await consumer.stop()


async def replay_dead_letters(
    bootstrap: str, topics: Iterable[str], limit: int = 1000, quiet_s: float = QUIET_S
) -> list[DeadLetter]:
    """Publish the dead letters not replayed before back onto their original topics,
    with their original key, value and headers. The replayer's consumer group remembers
    how far it got, so a second replay sends nothing twice."""
    # Partitions are assigned, not subscribed: the group only keeps the replayer's
    # offsets, so no join (and no wait for a rebalance) happens.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=REPLAY_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = new_producer(bootstrap)
    try:
        async with kafka_errors(bootstrap):
            await consumer.start()
            await producer.start()
        partitions = _partitions(consumer, topics)
        if not partitions:
            return []
        consumer.assign(partitions)
        records = await _read(consumer, limit, quiet_s)
        replayed = []
        for record in records:
            letter = _letter(record)
            headers = [(k, v) for k, v in record.headers or () if k not in DLQ_HEADERS]
            await producer.send_and_wait(
                letter.original_topic, value=record.value, key=record.key, headers=headers
            )
            await consumer.commit(
                {TopicPartition(record.topic, record.partition): record.offset + 1}
            )
            replayed.append(letter)
        return replayed
    finally:
        await producer.stop()
        await consumer.stop()
