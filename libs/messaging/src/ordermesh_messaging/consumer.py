"""The consumer loop every consuming service runs: decode a poll's records, dedupe them
through the inbox and handle them in one transaction, fall back to one transaction per
event (with retries, backoff and dead letters) when that fails, then commit the offsets.

Guarantees: an offset is committed only after the handler's transaction (with its
inbox rows) committed, or after the record reached ``<topic>.dlq`` with acks=all. A crash
in between means redelivery, and the inbox makes redelivery a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging import clients
from ordermesh_messaging.clients import start_or_stop
from ordermesh_messaging.cloudevents import header_map, parse_time
from ordermesh_messaging.inbound import (
    InboundEvent,
    UndecodableEvent,
    decode_payload,
    under_its_span,
)
from ordermesh_messaging.inbox import Inbox
from ordermesh_messaging.producer import new_producer
from ordermesh_messaging.reachability import describe
from ordermesh_messaging.settings import ConsumerSettings
from ordermesh_messaging.topics import dlq_topic, ensure_topics
from ordermesh_platform.db import Transactions, is_connection_error
from ordermesh_platform.logs import get_logger
from ordermesh_platform.metrics import BATCH_SIZE, CONSUMER_LAG, CONSUMER_MESSAGES
from ordermesh_platform.resilience import Backoff
from ordermesh_platform.telemetry import (
    context_from_traceparent,
    otlp_endpoint,
    record_error,
    tracer,
    untraced,
)
from ordermesh_platform.workers import run_periodically

log = get_logger(__name__)

# Handles new events (a poll's worth, or one alone) inside the consumer's transaction.
Handler = Callable[[AsyncConnection, Sequence[InboundEvent]], Awaitable[None]]
MAX_BACKOFF_S = 5.0
RESTART_BACKOFF = Backoff(0.4, MAX_BACKOFF_S)  # after the consumer itself failed
DATABASE_WAIT = Backoff(MAX_BACKOFF_S, MAX_BACKOFF_S)  # between looks at a database that is down
MAX_POLL_RECORDS = 200
INBOX_SWEEP_S = 3600.0  # how often handled ids past the retention are dropped
MAX_PARTITION_FETCH_BYTES = 256 * 1024
DLQ_HEADERS = (
    "ordermesh_dlq_reason",
    "ordermesh_dlq_error",
    "ordermesh_dlq_attempts",
    "ordermesh_dlq_topic",
    "ordermesh_dlq_partition",
    "ordermesh_dlq_offset",
)


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0


def inbound_event(
    record: ConsumerRecord,
    trace_context: Context | None = None,
    headers: dict[str, bytes] | None = None,
) -> InboundEvent:
    headers = header_map(record.headers) if headers is None else headers
    event_id = headers.get("ce_id", b"").decode(errors="replace")
    event_type = headers.get("ce_type", b"").decode(errors="replace")
    if not event_id:
        raise UndecodableEvent("no ce_id header")
    return InboundEvent(
        event_id=event_id,
        event_type=event_type,
        source=headers.get("ce_source", b"").decode(errors="replace"),
        time=parse_time(headers.get("ce_time")),
        key=(record.key or b"").decode(errors="replace"),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        payload=decode_payload(event_type, record.value or b""),
        headers=headers,
        trace_context=trace_context,
    )


def first_of_each(
    events: Sequence[InboundEvent], claimed: set[str]
) -> tuple[list[InboundEvent], list[InboundEvent]]:
    """(new, duplicates): the first copy of each claimed event id is new, the rest not."""
    unseen = set(claimed)
    new, duplicates = [], []
    for event in events:
        if event.event_id in unseen:
            unseen.discard(event.event_id)
            new.append(event)
        else:
            duplicates.append(event)
    return new, duplicates


def _in_span(span: Span) -> contextlib.AbstractContextManager[Span]:
    # The consumer alone decides a span's status: a failure it retries is no error yet.
    return trace.use_span(span, record_exception=False, set_status_on_exception=False)


class EventConsumer:
    def __init__(
        self,
        name: str,
        topics: Sequence[str],
        handler: Handler,
        sessions: Transactions,
        inbox: Inbox,
        settings: ConsumerSettings,
        wanted: Callable[[InboundEvent], bool] = lambda event: True,
        wanted_type: Callable[[str, str], bool] = lambda topic, event_type: True,
        deduplicated: Callable[[InboundEvent], bool] = lambda event: True,
    ) -> None:
        self.name = name
        self.topics = tuple(topics)
        self._handler = handler
        # Events the handler acts on. The others are passed over: no inbox row, no
        # transaction, their offsets committed with the rest (counted as "ignored").
        self._wanted = wanted
        # By (topic, ce_type), before the payload is decoded: what no handler reads of a
        # topic costs a header look-up.
        self._wanted_type = wanted_type
        # Events whose handler is idempotent by itself need no inbox row.
        self._deduplicated = deduplicated
        self._sessions = sessions
        self._inbox = inbox
        self._settings = settings
        self.stats = ConsumerStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._poll_size = BATCH_SIZE.labels(f"consume_{name}")  # records per poll

    async def forget_handled(self) -> int:
        """Drop inbox rows older than the retention (keep it above the topics')."""
        with untraced():  # a chore: no trace of its own
            return await self._inbox.forget_older_than(
                self._sessions, self._settings.inbox_retention_s
            )

    def inbox_sweeper(self) -> Coroutine[Any, Any, None]:
        """The worker that runs ``forget_handled`` every ``INBOX_SWEEP_S``."""
        return run_periodically("inbox-retention", self.forget_handled, INBOX_SWEEP_S)

    @property
    def group_id(self) -> str:
        return self._settings.consumer_group or f"ordermesh-{self.name}"

    async def run(self) -> None:
        """Consume until cancelled; broker and database outages are waited out."""
        failures = 0
        try:
            while True:
                try:
                    await self._start()
                    failures = 0
                    await self._consume()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    failures += 1
                    backoff = RESTART_BACKOFF.wait_s(failures)
                    log.warning(
                        "consumer failed; restarting",
                        error=describe(error, self._settings.kafka_bootstrap),
                        backoff_s=backoff,
                    )
                    await self._stop()
                    await asyncio.sleep(backoff)
        finally:
            await self._stop()

    async def _start(self) -> None:
        if self._consumer is not None:
            return
        s = self._settings
        if s.kafka_create_topics:
            await ensure_topics(
                s.kafka_bootstrap,
                self.topics,
                s.kafka_topic_partitions,
                s.kafka_replication_factor,
                s.kafka_request_timeout_s,
            )
        producer = new_producer(s.kafka_bootstrap, s.kafka_request_timeout_s)
        await start_or_stop(producer)
        self._producer = producer  # stopped by _stop() whatever happens next
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=s.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=MAX_POLL_RECORDS,
            session_timeout_ms=int(s.consumer_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.consumer_session_timeout_s * 1000 / 3),
            # The client holds one fetched batch per partition until it is consumed: its
            # memory grows with lag up to partitions x this. 256 KiB still holds more than
            # a poll's worth of our events (well under 1 KiB each); the default is 1 MiB.
            # A larger record still comes through: brokers return a first batch whole.
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        )
        await start_or_stop(consumer)
        self._consumer = consumer
        log.info("consuming", topics=self.topics, group=self.group_id)

    async def _stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        for client in (consumer, producer):
            if client is not None:
                await clients.stop(client)

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            polled = await self._consumer.getmany(timeout_ms=500)
            if not polled:
                continue
            self._poll_size.observe(sum(map(len, polled.values())))
            # A poll is one batch across its partitions: one transaction and one offset
            # commit, where a batch per partition would pay both for every partition.
            await self.process([record for records in polled.values() for record in records])
            # Only now is every effect of these records durable (or dead-lettered).
            await self._consumer.commit(
                {partition: records[-1].offset + 1 for partition, records in polled.items()}
            )
            for partition, records in polled.items():
                self._observe_lag(partition, records[-1].offset)

    def _observe_lag(self, partition: TopicPartition, last_offset: int) -> None:
        assert self._consumer is not None
        highwater = self._consumer.highwater(partition)
        if highwater is not None:
            CONSUMER_LAG.labels(self.name, partition.topic, str(partition.partition)).set(
                max(0, highwater - last_offset - 1)
            )

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        """Handle records: the events the handler wants each under a CONSUMER span that
        continues its producer's trace, all in one transaction, or one by one when that
        fails. The others are passed over before any span is made for them."""
        wanted: list[tuple[ConsumerRecord, InboundEvent]] = []
        ignored: list[InboundEvent] = []
        for record, event in await self._decoded(records):
            if self._wanted(event):
                wanted.append((record, event))
            else:
                ignored.append(event)
        self._count(ignored, "ignored")
        if not wanted:
            return
        if not otlp_endpoint():
            # No span would be exported, so none is made: an event's producer context is
            # read from its headers only where a handler makes it current
            # (``under_its_span``), which most handlers of a batch never do.
            await self._handle_batch(wanted)
            return
        spans = [self._consume_span(record, event.headers) for record, event in wanted]
        try:
            await self._handle_batch(
                [
                    (record, replace(event, trace_context=trace.set_span_in_context(span)))
                    for (record, event), span in zip(wanted, spans, strict=True)
                ]
            )
        finally:
            for span in spans:
                span.end()

    def _consume_span(self, record: ConsumerRecord, headers: Mapping[str, bytes]) -> Span:
        parent = context_from_traceparent(
            headers.get("traceparent", b"").decode(errors="replace"),
            headers.get("tracestate", b"").decode(errors="replace"),
        )
        if not otlp_endpoint():
            # No span is exported: the producer's context stands in for a CONSUMER span
            # nobody would receive (logs and what the handler writes keep its trace).
            return trace.get_current_span(parent)
        return tracer().start_span(
            f"process {record.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.kafka.message.key": (record.key or b"").decode(errors="replace"),
                "messaging.message.id": headers.get("ce_id", b"").decode(errors="replace"),
                "messaging.consumer.group.name": self.group_id,
            },
        )

    async def _decoded(
        self, records: Sequence[ConsumerRecord]
    ) -> list[tuple[ConsumerRecord, InboundEvent]]:
        """The records of a wanted type that decode, with their events; those of other
        types are passed over undecoded, the undecodable dead-lettered, each under its
        span."""
        decoded = []
        passed_over: Counter[str] = Counter()
        for record in records:
            headers = header_map(record.headers)
            event_type = headers.get("ce_type", b"").decode(errors="replace")
            if event_type and not self._wanted_type(record.topic, event_type):
                passed_over[record.topic] += 1
                continue
            try:
                decoded.append((record, inbound_event(record, headers=headers)))
            except UndecodableEvent as error:
                span = self._consume_span(record, headers)
                try:
                    with _in_span(span):
                        record_error(span, error)
                        await self._dead_letter(record, "undecodable", str(error), attempts=0)
                finally:
                    span.end()
        for topic, count in passed_over.items():
            CONSUMER_MESSAGES.labels(self.name, topic, "ignored").inc(count)
        return decoded

    async def _handle_batch(self, decoded: Sequence[tuple[ConsumerRecord, InboundEvent]]) -> None:
        if len(decoded) > 1:
            # Its shared statements belong to no one event's trace: no trace of their own.
            with untraced():
                error = await self._attempt([event for _, event in decoded])
            if error is None:
                return
            log.warning(
                "batch failed; handling its events one by one",
                consumer=self.name,
                events=len(decoded),
                error=repr(error),
            )
        for record, event in decoded:
            with under_its_span(event):
                await self._handle_alone(record, event)

    async def _handle_alone(self, record: ConsumerRecord, event: InboundEvent) -> None:
        """Handle one event, retried with backoff; dead-lettered after the last attempt."""
        attempts = self._settings.consumer_max_attempts
        for attempt in range(1, attempts + 1):
            error = await self._attempt([event])
            if error is None:
                return
            self._count_failure(event, attempt, error)
            if attempt < attempts:
                await Backoff(self._settings.consumer_backoff_s, MAX_BACKOFF_S).sleep(attempt)
        assert error is not None
        record_error(trace.get_current_span(event.trace_context), error)
        await self._dead_letter(record, "handler-failed", repr(error), attempts)

    async def _attempt(self, events: Sequence[InboundEvent]) -> Exception | None:
        """Handle the events in one transaction: None once it committed, else the error
        that is theirs. A database outage is not: it is waited out, however long."""
        while True:
            try:
                await self._handle(events)
                return None
            except Exception as error:
                if not is_connection_error(error):
                    return error
                # Never dead-letter for it, and keep the offsets where they are.
                log.warning("database unavailable; waiting", error=repr(error))
                await DATABASE_WAIT.sleep(1)

    async def _handle(self, events: Sequence[InboundEvent]) -> None:
        async with self._sessions.begin() as session:
            deduplicated = [self._deduplicated(event) for event in events]
            checked = [e for e, d in zip(events, deduplicated, strict=True) if d]
            claimed = await self._inbox.claim(session, (event.event_id for event in checked))
            first, duplicates = first_of_each(checked, claimed)
            fresh = {id(event) for event in first}
            new = [e for e, d in zip(events, deduplicated, strict=True) if id(e) in fresh or not d]
            if new:
                await self._handler(session, new)
        self.stats.handled += len(new)
        self.stats.duplicates += len(duplicates)
        self._count(new, "handled")
        self._count(duplicates, "duplicate")

    def _count(self, events: Sequence[InboundEvent], result: str) -> None:
        for topic, count in Counter(event.topic for event in events).items():
            CONSUMER_MESSAGES.labels(self.name, topic, result).inc(count)

    def _count_failure(self, event: InboundEvent, attempt: int, error: Exception) -> None:
        self.stats.failed_attempts += 1
        CONSUMER_MESSAGES.labels(self.name, event.topic, "failed").inc()
        log.warning(
            "handler failed",
            consumer=self.name,
            event_id=event.event_id,
            event_type=event.event_type,
            attempt=attempt,
            error=repr(error),
        )

    async def _dead_letter(
        self,
        record: ConsumerRecord,
        reason: str,
        error: str,
        attempts: int,
    ) -> None:
        assert self._producer is not None
        headers = [(k, v) for k, v in (record.headers or ()) if k not in DLQ_HEADERS]
        headers += [
            ("ordermesh_dlq_reason", reason.encode()),
            ("ordermesh_dlq_error", error[:1000].encode()),
            ("ordermesh_dlq_attempts", str(attempts).encode()),
            ("ordermesh_dlq_topic", record.topic.encode()),
            ("ordermesh_dlq_partition", str(record.partition).encode()),
            ("ordermesh_dlq_offset", str(record.offset).encode()),
        ]
        # Acknowledged before the offset moves on: a record is never dropped.
        await self._producer.send_and_wait(
            dlq_topic(record.topic), value=record.value, key=record.key, headers=headers
        )
        self.stats.dead_lettered += 1
        CONSUMER_MESSAGES.labels(self.name, record.topic, "dead_lettered").inc()
        log.error(
            "message dead-lettered",
            consumer=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
        )
