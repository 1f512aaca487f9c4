"""The outbox relay: publishes committed outbox rows to Kafka, deletes them only once
the broker acknowledged them (acks=all), and keeps each aggregate's events in commit
order even with several relays on one outbox.

How a pass works (PostgreSQL): one transaction, a constant number of statements
however many rows and buckets it carries (rows are bucketed by aggregate id):
    BEGIN
    SELECT ... WHERE bucket = ANY(ARRAY(buckets where pg_try_advisory_xact_lock))
      AND published_at IS NULL ORDER BY seq LIMIT n
                                 -- the free buckets locked in the claim itself; another
                                 -- relay holds some? not those. No row locks: the
                                 -- buckets' locks suffice
    produce the rows, one record batch per partition; wait for every acknowledgement
    DELETE FROM outbox WHERE seq = ANY(acknowledged prefix)
    COMMIT
A published row leaves the outbox in the pass that published it. Kept (marked), the
rows stood between the claim and the unpublished rows: the planner, reading statistics
taken during a backlog, walks the primary key in seq order, and every claim then stepped
over every row published since (70-160 ms a claim behind 100,000 of them, against
2 ms), so a backlog drained more slowly the longer it was.
A relay that dies mid-batch rolls its transaction back: the rows are published again by
the next pass (a duplicate on the wire, never a gap). SQLite has one writer at a time,
so its single relay simply reads in seq order, and holds no transaction (no write lock)
while the broker acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ordermesh_messaging import clients
from ordermesh_messaging.clients import start_or_stop
from ordermesh_messaging.cloudevents import build_headers
from ordermesh_messaging.events import TOPICS
from ordermesh_messaging.outbox import NOTIFY_CHANNEL, OUTBOX_BUCKETS
from ordermesh_messaging.producer import new_producer, partition_for
from ordermesh_messaging.reachability import describe
from ordermesh_messaging.settings import RelaySettings
from ordermesh_messaging.topics import ensure_topics
from ordermesh_platform.db import create_engine, one_of
from ordermesh_platform.logs import get_logger
from ordermesh_platform.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PUBLISHED
from ordermesh_platform.resilience import Backoff
from ordermesh_platform.service import Runtime
from ordermesh_platform.telemetry import (
    context_from_traceparent,
    otlp_endpoint,
    record_error,
    traceparent_of_current,
    tracer,
    untraced,
)

log = get_logger(__name__)

MAX_BACKOFF_S = 5.0
RESTART_BACKOFF = Backoff(0.2, MAX_BACKOFF_S)  # after a failed pass
MARKED_SWEEP_S = 60.0
SWEEP_CHUNK = 10_000
BACKLOG_OBSERVE_S = 1.0
# Commits arriving together wake the relay once: a pass costs a few statements however
# many rows it carries, so waiting a little for company is cheaper than a pass per row.
WAKE_COALESCE_S = 0.05


# Bucket groups published side by side while a backlog lasts, each on its own connection.
GROUPS_BEHIND_A_BACKLOG = 3
# Claims a group makes in one pass while each comes back full: the groups then wait for
# one another once per pass, not once per claim.
DRAIN_CLAIMS = 8
# The claim's rows come from the free buckets, each locked in the claim itself: the
# array is built once (an InitPlan), its WHERE run for each bucket, so a bucket another
# relay holds is left to it, and the partial index is searched for the rest.
_IN_FREE_BUCKETS = text(
    "bucket = ANY(ARRAY(SELECT x.b FROM unnest(CAST(:buckets AS integer[]),"
    " CAST(:keys AS bigint[])) AS x(b, k) WHERE pg_try_advisory_xact_lock(x.k)))"
)


class Claimed(NamedTuple):
    """What a record is made of: a pass reads nothing else. A plain named tuple, not
    SQLAlchemy's Row: a pass reads each field of every row, and a Row's attribute
    lookup cost about a third of the relay's CPU (py-spy, docs/performance.md)."""

    seq: int
    event_id: str
    aggregate_id: str
    event_type: str
    topic: str
    payload: bytes
    traceparent: str
    tracestate: str
    created_at: datetime


class Sent(NamedTuple):
    """One record batch: the rows it holds (their positions in the pass, in order), and
    the broker's answer (where its first record went) or the error that failed it."""

    held: list[int]
    answer: Any


def make_producer(settings: RelaySettings) -> AIOKafkaProducer:
    # acks=all (new_producer): a row leaves the outbox only when every in-sync
    # replica has it.
    return new_producer(settings.kafka_bootstrap, settings.kafka_request_timeout_s)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        source: str,
        settings: RelaySettings,
        producer_factory: Callable[[RelaySettings], AIOKafkaProducer] = make_producer,
    ) -> None:
        self._engine = engine
        self._table = table
        self._source = source
        self._service = source.rsplit("/", 1)[-1]
        self._settings = settings
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._postgres = engine.dialect.name == "postgresql"
        self._topics_ready = not settings.kafka_create_topics
        # One advisory lock per bucket of this table: whoever holds it publishes the
        # bucket, in seq order, so each aggregate's events stay in order across relays.
        keys = [
            zlib.crc32(f"ordermesh-outbox-{table.name}-{b}".encode()) for b in range(OUTBOX_BUCKETS)
        ]
        # A pass takes every bucket in one transaction; behind a backlog it splits them
        # into groups published side by side, so the database claims and marks one
        # group while the broker acknowledges another.
        self._bucket_groups = [
            {"buckets": list(range(OUTBOX_BUCKETS))[g::n], "keys": keys[g::n]}
            for n in (1, GROUPS_BEHIND_A_BACKLOG)
            for g in range(n)
        ]
        self._groups = self._bucket_groups[:1]
        self.behind = False  # the last pass was full: go again at once
        self._last_sweep = 0.0
        self._last_observed = 0.0
        self.published = 0  # rows acknowledged by the broker since start

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Publish until cancelled; broker or database outages are waited out."""
        listener = asyncio.create_task(self._listen()) if self._postgres else None
        failures = 0
        loop = asyncio.get_running_loop()
        published_at = -math.inf  # when the last pass that published anything began
        try:
            while True:
                try:
                    started = loop.time()
                    with untraced():
                        if await self.publish_once():
                            published_at = started
                        await self._sweep_marked()
                        await self._observe_backlog()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    failures += 1
                    # The backlog keeps growing while the broker is away: show it.
                    with contextlib.suppress(Exception), untraced():
                        await self._observe_backlog(force=True)
                    await self._drop_producer()
                    backoff = RESTART_BACKOFF.wait_s(failures)
                    log.warning(
                        "relay pass failed; retrying",
                        error=describe(error, self._settings.kafka_bootstrap),
                        backoff_s=backoff,
                    )
                    await asyncio.sleep(backoff)
                    continue
                if not self.behind:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._settings.outbox_poll_s)
                    # Under steady load the passes that publish are spaced: each costs
                    # its statements and a produce request (a stored batch per
                    # partition, which every consumer's fetch then walks on the local
                    # broker) however many rows it carries. After a quiet spell a
                    # commit goes at once.
                    spaced = published_at + self._settings.outbox_pass_interval_s - loop.time()
                    await asyncio.sleep(max(WAKE_COALESCE_S, spaced))
                    self._wake.clear()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
            await self._drop_producer()

    async def publish_once(self) -> int:
        """One pass: the rows published."""
        producer = await self._ready_producer()
        if len(self._groups) == 1:
            published = await self._publish_group(producer, self._groups[0])
            self.behind = published >= self._settings.outbox_batch_size
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(self._drain_group(producer, g)) for g in self._groups
                    ]
            except ExceptionGroup as failed:
                # The other groups were cancelled and rolled back: their rows go next pass.
                raise failed.exceptions[0] from None
            drained = [t.result() for t in tasks]
            published = sum(rows for rows, _ in drained)
            self.behind = any(full for _, full in drained)
        # _bucket_groups: every bucket, then the groups that share them out.
        split = self.behind and self._postgres
        self._groups = self._bucket_groups[1:] if split else self._bucket_groups[:1]
        return published

    async def _drain_group(
        self, producer: AIOKafkaProducer, buckets: dict[str, list[int]]
    ) -> tuple[int, bool]:
        """Behind a backlog, a group claims its buckets' next rows again while its last
        claim came back full, up to ``DRAIN_CLAIMS`` times: one group's claim and mark
        then overlap another's acknowledgements, where a barrier after every claim left
        the database and the broker waiting on the slowest group. The rows published,
        and whether the last claim was full (the backlog lasts)."""
        batch = self._settings.outbox_batch_size
        total = 0
        for _ in range(DRAIN_CLAIMS):
            published = await self._publish_group(producer, buckets)
            total += published
            if published < batch:
                return total, False
        return total, True

    async def _publish_group(
        self, producer: AIOKafkaProducer, buckets: dict[str, list[int]]
    ) -> int:
        """Claim, publish and delete the oldest rows of these buckets.

        PostgreSQL: in one transaction, whose bucket locks keep other relays off these
        rows until they are deleted. Nothing else writes an unpublished row, so the claim
        locks no row (a row lock is written into the row, WAL and all). SQLite: every
        transaction holds the database's one write lock (BEGIN IMMEDIATE), so the rows
        are read in one short transaction and deleted in another, and no lock is held
        while the broker acknowledges: a slow or absent broker would otherwise stall
        every writer of the service, its requests too. Its one relay reads in seq
        order, so nothing else claims the rows between."""
        async with self._engine.connect() as conn:
            if self._postgres:
                async with conn.begin():
                    # None when other relays are publishing every bucket, or all is out.
                    rows = await self._claim(conn, buckets)
                    acknowledged = await self._produce(producer, rows) if rows else 0
                    await self._delete_acknowledged(conn, rows, acknowledged)
            else:
                async with conn.begin():
                    rows = await self._claim(conn, None)
                acknowledged = await self._produce(producer, rows) if rows else 0
                if rows:
                    async with conn.begin():
                        await self._delete_acknowledged(conn, rows, acknowledged)
        self.published += acknowledged
        if acknowledged < len(rows):
            raise RuntimeError(f"broker acknowledged {acknowledged} of {len(rows)} rows")
        return acknowledged

    async def _claim(
        self, conn: AsyncConnection, buckets: dict[str, list[int]] | None
    ) -> list[Claimed]:
        """The oldest unpublished rows; where relays share them (``buckets``: the
        buckets and their lock keys), of the buckets this claim could lock."""
        t = self._table
        query = (
            select(*(t.c[name] for name in Claimed._fields))
            .where(t.c.published_at.is_(None))
            .order_by(t.c.seq)
            .limit(self._settings.outbox_batch_size)
        )
        if buckets is not None:
            query = query.where(_IN_FREE_BUCKETS)
        return [Claimed._make(row) for row in await conn.execute(query, buckets or {})]

    async def _delete_acknowledged(
        self, conn: AsyncConnection, rows: list[Claimed], acknowledged: int
    ) -> None:
        """The acknowledged prefix leaves the outbox; the first row after it is tried
        once more."""
        t = self._table
        if acknowledged:
            seqs = [r.seq for r in rows[:acknowledged]]
            await conn.execute(delete(t).where(one_of(t.c.seq, "seqs", self._postgres, seqs)))
        if acknowledged < len(rows):
            await conn.execute(
                update(t).where(t.c.seq == rows[acknowledged].seq).values(attempts=t.c.attempts + 1)
            )

    async def _produce(self, producer: AIOKafkaProducer, rows: Sequence[Claimed]) -> int:
        """Send every row, wait for every acknowledgement; the length of the
        acknowledged prefix (rows after a failure are sent again next pass)."""
        if not otlp_endpoint():
            # No span is exported: each record carries the trace context of the request
            # that wrote its row, so consumers still join that trace, without a
            # PRODUCER span per event that nobody would receive.
            contexts = [(row.traceparent, row.tracestate) for row in rows]
            return self._acknowledged(rows, await self._send_batches(producer, rows, contexts))
        spans = [
            # A PRODUCER span per event, child of the request that wrote the row; the
            # record carries this span's context, so consumers join the same trace.
            tracer().start_span(
                f"publish {row.topic}",
                context=context_from_traceparent(row.traceparent, row.tracestate),
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": row.topic,
                    "messaging.message.id": row.event_id,
                    "messaging.kafka.message.key": row.aggregate_id,
                    "ordermesh.event_type": row.event_type,
                },
            )
            for row in rows
        ]
        contexts = []
        for span in spans:
            with trace.use_span(span):
                contexts.append(traceparent_of_current())
        sent = await self._send_batches(producer, rows, contexts)
        for batch in sent:
            for position, i in enumerate(batch.held):
                span = spans[i]
                if isinstance(batch.answer, BaseException):
                    record_error(span, batch.answer)
                else:
                    span.set_attribute(
                        "messaging.destination.partition.id", str(batch.answer.partition)
                    )
                    span.set_attribute("messaging.kafka.offset", batch.answer.offset + position)
                span.end()
        return self._acknowledged(rows, sent)

    async def _send_batches(
        self,
        producer: AIOKafkaProducer,
        rows: Sequence[Claimed],
        contexts: Sequence[tuple[str, str]],
    ) -> list[Sent]:
        """The record batches sent, each with its answer. The rows go as one record
        batch per partition (aiokafka's send_batch): one future and one metadata check
        per batch, not per record. Keys pick partitions as a keyed send does (murmur2),
        and a batch keeps the rows' order, so an aggregate's events stay in one
        partition, in seq order."""
        batches: dict[tuple[str, int], list[int]] = {}
        partition_of: dict[tuple[str, str], int] = {}
        partitions: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            chosen = partition_of.get((row.topic, row.aggregate_id))
            if chosen is None:
                if row.topic not in partitions:
                    partitions[row.topic] = sorted(await producer.partitions_for(row.topic))
                every = partitions[row.topic]
                chosen = partition_for(row.aggregate_id.encode(), every)
                partition_of[(row.topic, row.aggregate_id)] = chosen
            batches.setdefault((row.topic, chosen), []).append(i)
        sent: list[tuple[asyncio.Future[Any], list[int]]] = []
        source = self._source
        for (topic, partition), members in batches.items():
            builder, held = producer.create_batch(), list[int]()
            for i in members:
                row = rows[i]
                record = {
                    "timestamp": None,
                    "key": row.aggregate_id.encode(),
                    "value": bytes(row.payload),
                    "headers": build_headers(
                        row.event_id, row.event_type, source, row.created_at, *contexts[i]
                    ),
                }
                if builder.append(**record) is None:  # full: send it, start the next
                    if not held:
                        raise MessageSizeTooLargeError(f"event {row.event_id} is too large")
                    future = await producer.send_batch(builder, topic, partition=partition)
                    sent.append((future, held))
                    builder, held = producer.create_batch(), list[int]()
                    if builder.append(**record) is None:
                        raise MessageSizeTooLargeError(f"event {row.event_id} is too large")
                held.append(i)
            sent.append((await producer.send_batch(builder, topic, partition=partition), held))
        answers = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        return [Sent(held, answer) for (_, held), answer in zip(sent, answers, strict=True)]

    def _acknowledged(self, rows: Sequence[Claimed], sent: Sequence[Sent]) -> int:
        """The length of the acknowledged prefix (up to the first row of a failed
        batch); counts it and logs the first failure."""
        failed = [(b.held[0], b.answer) for b in sent if isinstance(b.answer, BaseException)]
        acknowledged, error = min(failed, key=lambda f: f[0]) if failed else (len(rows), None)
        if acknowledged < len(rows):
            log.warning("publish not acknowledged", event_id=rows[acknowledged].event_id,
                        error=repr(error))  # fmt: skip
        for topic, count in Counter(row.topic for row in rows[:acknowledged]).items():
            OUTBOX_PUBLISHED.labels(self._service, topic).inc(count)
        return acknowledged

    # -- helpers -------------------------------------------------------------------------

    async def backlog(self) -> tuple[int, float]:
        """Unpublished rows, and the age in seconds of the oldest of them."""
        t = self._table
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.min(t.c.created_at)).where(t.c.published_at.is_(None))
                )
            ).one()
        count, oldest = row
        if oldest is None:
            return int(count), 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return int(count), (datetime.now(UTC) - oldest).total_seconds()

    async def _observe_backlog(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_observed < BACKLOG_OBSERVE_S:
            return
        self._last_observed = now
        count, age = await self.backlog()
        OUTBOX_BACKLOG.labels(self._service).set(count)
        OUTBOX_OLDEST_AGE.labels(self._service).set(age)

    async def ready(self) -> None:
        """Connect to the broker and create the topics now rather than on first work."""
        await self._ready_producer()

    async def close(self) -> None:
        await self._drop_producer()

    async def _ready_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._producer_factory(self._settings)
            await start_or_stop(producer)
            self._producer = producer
        if not self._topics_ready:
            s = self._settings
            await ensure_topics(
                s.kafka_bootstrap,
                TOPICS.values(),
                s.kafka_topic_partitions,
                s.kafka_replication_factor,
                s.kafka_request_timeout_s,
            )
            self._topics_ready = True
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await clients.stop(producer)

    async def _sweep_marked(self) -> None:
        """Delete the rows a relay of an earlier release marked published (it kept them
        an hour) instead of deleting them: during a rolling upgrade, or after one."""
        now = time.monotonic()
        if now - self._last_sweep < MARKED_SWEEP_S:
            return
        self._last_sweep = now
        t = self._table
        while True:
            async with self._engine.begin() as conn:
                doomed = select(t.c.seq).where(t.c.published_at.is_not(None)).limit(SWEEP_CHUNK)
                result = await conn.execute(delete(t).where(t.c.seq.in_(doomed)))
            if (result.rowcount or 0) < SWEEP_CHUNK:
                return

    async def _listen(self) -> None:
        """LISTEN for writers' NOTIFY; reconnects after a database outage. On a
        connection of its own, outside the service's pool: held for as long as the relay
        runs, a pooled one would leave the service's own work a connection short."""
        listener = create_engine(self._engine.url, pool_size=1)
        try:
            while True:
                try:
                    async with listener.connect() as conn:
                        await self._listen_on(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.debug("outbox LISTEN connection lost", error=repr(error))
                    await asyncio.sleep(1.0)
        finally:
            await listener.dispose()

    async def _listen_on(self, conn: AsyncConnection) -> None:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None

        def wake(*_: object) -> None:
            self._wake.set()

        closed = asyncio.Event()
        driver.add_termination_listener(lambda *_: closed.set())
        await driver.add_listener(NOTIFY_CHANNEL, wake)
        try:
            await closed.wait()
        finally:
            with contextlib.suppress(Exception):
                await driver.remove_listener(NOTIFY_CHANNEL, wake)


def relay_workers(
    runtime: Runtime, table: Table, service: str
) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    """The relay as a background worker of the service, unless it runs on its own
    (``ORDERMESH_RELAY_ENABLED=false`` and ``ordermesh relay <service>``)."""
    settings = runtime.settings
    assert isinstance(settings, RelaySettings)
    if not settings.relay_enabled:
        return []
    relay = OutboxRelay(runtime.engine, table, f"ordermesh/{service}", settings)
    return [("outbox-relay", relay.run())]
