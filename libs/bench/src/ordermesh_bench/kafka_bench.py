"""The relay against its bound: the same events, produced straight with aiokafka to the
same broker, in the same batch size, waiting for the same acknowledgements."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime

import asyncpg
from sqlalchemy import MetaData

from ordermesh.events.v1 import events_pb2
from ordermesh_bench.rawsql import asyncpg_dsn, checkpoint
from ordermesh_messaging.cloudevents import build_headers
from ordermesh_messaging.outbox import bucket_of, outbox_table
from ordermesh_messaging.producer import new_producer
from ordermesh_messaging.relay import OutboxRelay
from ordermesh_messaging.settings import RelaySettings
from ordermesh_platform.db import create_engine

TOPIC = "ordermesh.orders.v1"
AGGREGATE_EVENTS = 5  # events per aggregate, as an order's life has a handful
outbox = outbox_table(MetaData())  # the fixed outbox contract, as every service has it


def sample_events(count: int) -> list[tuple[str, str, bytes]]:
    """(event id, aggregate id, payload) of OrderConfirmed-sized events."""
    events = []
    for i in range(count):
        aggregate = f"bench-{i // AGGREGATE_EVENTS}"
        payload = events_pb2.OrderConfirmed(
            order_id=aggregate,
            customer_id="bench-customer",
            lines=[events_pb2.EventLine(sku="SKU-BENCH-1", quantity=2)],
            payment_id=str(uuid.uuid4()),
        ).SerializeToString()
        events.append((str(uuid.uuid4()), aggregate, payload))
    return events


async def fill_outbox(database_url: str, events: list[tuple[str, str, bytes]]) -> None:
    """The outbox holding these events only, unpublished, analysed and checkpointed.
    The rows an earlier run left are deleted and vacuumed first, as autovacuum would
    leave them (the relay deletes what it publishes): left there, they made each of the
    three runs slower than the one before (44.5K, 38.5K, 30.6K events/s in one bench),
    so the runs measured the table's history more than the relay."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    now = datetime.now(UTC)
    try:
        await conn.execute("DELETE FROM outbox")
        await conn.execute("VACUUM outbox")
        await conn.copy_records_to_table(
            "outbox",
            columns=[
                "event_id", "aggregate_type", "aggregate_id", "event_type", "topic", "payload",
                "traceparent", "tracestate", "created_at", "attempts", "bucket",
            ],
            records=[
                (e, "order", a, "ordermesh.events.v1.OrderConfirmed", TOPIC, p, "", "", now, 0,
                 bucket_of(a))
                for e, a, p in events
            ],
        )  # fmt: skip
        # As autovacuum would after such a load: the claim is planned on the table as
        # it is, not as the empty table it was.
        await conn.execute("ANALYZE outbox")
        # The run starts just after a checkpoint, as every other measured run does.
        await checkpoint(conn)
    finally:
        await conn.close()


async def relay_throughput(database_url: str, settings: RelaySettings, count: int) -> float:
    """Events per second for one relay draining ``count`` committed rows."""
    engine = create_engine(database_url, 4)
    relay = OutboxRelay(engine, outbox, "ordermesh/bench", settings)
    try:
        await relay.ready()  # connects and creates the topics: not measured
        await fill_outbox(database_url, sample_events(count))
        # The relay's own loop, as a service runs it: passes back to back while it is
        # behind, the backlog gauge once a second, the sweep of marked rows.
        started = time.perf_counter()
        running = asyncio.create_task(relay.run())
        try:
            while relay.published < count:
                if running.done():
                    running.result()  # a relay that stopped says why
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        return relay.published / max(elapsed, 1e-9)
    finally:
        await relay.close()
        await engine.dispose()


async def producer_throughput(bootstrap: str, count: int, batch: int) -> float:
    """Events per second produced straight to the broker, batch by batch, acks=all."""
    events = sample_events(count)
    # The relay's own producer settings: the baseline differs from the relay only by the
    # outbox around it.
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        now = datetime.now(UTC)
        started = time.perf_counter()
        for i in range(0, len(events), batch):
            futures = []
            for event_id, aggregate, payload in events[i : i + batch]:
                headers = build_headers(
                    event_id, "ordermesh.events.v1.OrderConfirmed", "ordermesh/bench", now
                )
                futures.append(
                    await producer.send(
                        TOPIC, value=payload, key=aggregate.encode(), headers=headers
                    )
                )
            for future in futures:
                await future
        return count / max(time.perf_counter() - started, 1e-9)
    finally:
        await producer.stop()
