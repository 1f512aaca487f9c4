"""The outbox and its relay against the real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.cloudevents import header_map
from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.outbox import NOTIFY_CHANNEL, Outbox
from ordermesh_messaging.relay import OutboxRelay
from ordermesh_messaging.settings import RelaySettings
from ordermesh_messaging.unit_of_work import UnitsOfWork
from ordermesh_order.domain import Order, PlaceOrder
from ordermesh_order.store import OrderRepository, orders, outbox
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.migrations import upgrade_to_head
from ordermesh_platform.telemetry import context_from_traceparent
from tests.support.broker import Broker, read_topic, running_broker
from tests.support.outbox import until_outbox_empty

pytestmark = pytest.mark.integration
TOPIC = "ordermesh.orders.v1"


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with running_broker() as b:
        yield b


@pytest.fixture
async def engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head("ordermesh_order:migrations", pg_database, "order")
    engine = create_engine(pg_database)
    yield engine
    await engine.dispose()


def _settings(broker: Broker, **change: object) -> RelaySettings:
    return RelaySettings.model_validate(
        {"kafka_bootstrap": broker.bootstrap, "outbox_poll_s": 0.05, **change}
    )


async def _write_interleaved(engine: AsyncEngine, aggregates: int, per_aggregate: int) -> None:
    """Events of many aggregates, each in its own transaction, interleaved; every event
    carries its position in its aggregate's history (in customer_id)."""
    sessions = Transactions(engine)
    box = Outbox(outbox)
    for n in range(per_aggregate):
        for a in range(aggregates):
            async with sessions.begin() as session:
                event = events_pb2.OrderCreated(order_id=f"agg-{a}", customer_id=str(n))
                await box.add(session, [DomainEvent("order", f"agg-{a}", event)])


async def _commit_one(engine: AsyncEngine, order_id: str) -> None:
    """One event of its own order, committed alone."""
    async with Transactions(engine).begin() as session:
        event = events_pb2.OrderCreated(order_id=order_id)
        await Outbox(outbox).add(session, [DomainEvent("order", order_id, event)])


async def _unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(select(func.count()).where(outbox.c.published_at.is_(None))) or 0
        )


async def test_a_failure_before_commit_leaves_neither_the_change_nor_its_event(
    engine: AsyncEngine,
) -> None:
    order = Order.place(str(uuid.uuid4()), PlaceOrder.validated("c", "k", [("A", 1)], "EUR", "t"))

    async def write_then_fail() -> None:
        async with UnitsOfWork(Transactions(engine), outbox).begin() as work:
            await OrderRepository(work.connection).add(order, "me", order.created_at)
            work.record(order.pull_events())
            raise RuntimeError("injected failure after the domain write, before commit")

    with pytest.raises(RuntimeError, match="injected"):
        await write_then_fail()
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(orders)) == 0
        assert await conn.scalar(select(func.count()).select_from(outbox)) == 0


async def test_the_outbox_wakes_its_relays_when_and_only_when_its_writer_commits(
    engine: AsyncEngine,
) -> None:
    """The writer sends no NOTIFY of its own: the outbox's trigger does, per insert
    statement, delivered at commit."""
    woken: asyncio.Queue[str] = asyncio.Queue()
    sessions = Transactions(engine)

    def event() -> DomainEvent:
        return DomainEvent("order", "agg-n", events_pb2.OrderCreated(order_id="agg-n"))

    async def write_then_fail() -> None:
        async with sessions.begin() as session:
            await Outbox(outbox).add(session, [event(), event()])
            raise RuntimeError("rolled back")

    async with engine.connect() as listening:  # as the relay listens
        driver = (await listening.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.add_listener(NOTIFY_CHANNEL, lambda *args: woken.put_nowait(args[2]))
        with pytest.raises(RuntimeError):
            await write_then_fail()
        async with sessions.begin() as session:
            await Outbox(outbox).add(session, [event()])
        assert await asyncio.wait_for(woken.get(), 5) == NOTIFY_CHANNEL
        await asyncio.sleep(0.2)
        assert woken.empty()  # one commit, one wake; the rolled-back insert none


async def test_a_published_row_leaves_the_outbox_and_rows_marked_by_an_earlier_release_go_too(
    engine: AsyncEngine, broker: Broker
) -> None:
    """Published rows are deleted, not kept: kept, they stood between the claim and the
    unpublished rows. A row a relay of an earlier release marked published (it kept
    them an hour) is swept, never published again."""
    await _write_interleaved(engine, aggregates=5, per_aggregate=1)
    async with engine.begin() as conn:
        written = set((await conn.execute(select(outbox.c.event_id))).scalars())
        await conn.execute(
            outbox.insert().values(
                event_id=str(uuid.uuid4()), aggregate_type="order", aggregate_id="agg-old",
                event_type="ordermesh.events.v1.OrderCreated", topic=TOPIC, payload=b"",
                created_at=func.now(), published_at=func.now(), bucket=0,
            )
        )  # fmt: skip
    relay = OutboxRelay(engine, outbox, "ordermesh/order", _settings(broker))
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(300):  # bounded: 30 s
            async with engine.connect() as conn:
                if not await conn.scalar(select(func.count()).select_from(outbox)):
                    break
            await asyncio.sleep(0.1)
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(outbox)) == 0
        assert relay.published == 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    on_the_wire = {
        header_map(r.headers)["ce_id"].decode()
        for r in await read_topic(broker.bootstrap, TOPIC, expect=len(written))
    }
    assert written <= on_the_wire


async def test_under_steady_commits_the_passes_are_spaced_and_after_a_quiet_spell_one_goes_at_once(
    engine: AsyncEngine, broker: Broker
) -> None:
    interval = 1.0
    relay = OutboxRelay(
        engine, outbox, "ordermesh/order", _settings(broker, outbox_pass_interval_s=interval)
    )
    loop = asyncio.get_running_loop()
    publishing: list[float] = []  # when each pass that published something began
    publish_once = relay.publish_once

    async def recorded() -> int:
        started = loop.time()
        published = await publish_once()
        if published:
            publishing.append(started)
        return published

    relay.publish_once = recorded  # type: ignore[method-assign]

    task = asyncio.create_task(relay.run())
    try:
        steady_until = loop.time() + 2.2
        n = 0
        while loop.time() < steady_until:  # a commit every 50 ms
            await _commit_one(engine, f"steady-{n}")
            n += 1
            await asyncio.sleep(0.05)
        await until_outbox_empty(engine, 30)
        steady = list(publishing)
        assert relay.published == n
        # About 45 commits in about 3 passes, not one pass per commit or two.
        assert 2 <= len(steady) <= 4
        assert all(b - a >= interval for a, b in itertools.pairwise(steady))
        await asyncio.sleep(interval + 0.2)  # quiet: idle polls publish nothing
        committed = loop.time()
        await _commit_one(engine, f"steady-{n}")
        await until_outbox_empty(engine, 30)
        assert len(publishing) == len(steady) + 1
        assert publishing[-1] - committed < 0.75 * interval  # did not wait out an interval
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await relay.close()


async def test_the_relays_listener_holds_no_connection_of_the_services_pool(
    pg_database: str, broker: Broker
) -> None:
    await upgrade_to_head("ordermesh_order:migrations", pg_database, "order")
    engine = create_engine(pg_database, pool_size=1)  # the service's whole pool
    watching = create_engine(pg_database, pool_size=1)
    relay = OutboxRelay(engine, outbox, "ordermesh/order", _settings(broker, outbox_poll_s=60))
    task = asyncio.create_task(relay.run())
    listening_pid = None
    try:
        for _ in range(100):  # bounded: 10 s for the listener to be LISTENing
            async with watching.connect() as conn:
                listening_pid = await conn.scalar(
                    text(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                    )
                )
            if listening_pid is not None:
                break
            await asyncio.sleep(0.1)
        assert listening_pid is not None
        async with asyncio.timeout(10), engine.connect() as conn:  # the pool's one connection
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != listening_pid
        # Woken by the listener (the poll is a minute away), through the one connection.
        await _commit_one(engine, "listened")
        await until_outbox_empty(engine, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await relay.close()
        await engine.dispose()
        await watching.dispose()


async def test_behind_a_backlog_each_group_claims_again_while_its_claims_come_back_full(
    engine: AsyncEngine, broker: Broker
) -> None:
    await _write_interleaved(engine, aggregates=60, per_aggregate=1)
    relay = OutboxRelay(engine, outbox, "ordermesh/order", _settings(broker, outbox_batch_size=5))
    try:
        assert await relay.publish_once() == 5  # every bucket in one claim: a full one
        assert relay.behind
        # Split into groups, each claims its buckets' rows five at a time until a claim
        # comes back short: the rest of the backlog in this one pass.
        assert await relay.publish_once() == 55
        assert not relay.behind
        assert await _unpublished(engine) == 0
    finally:
        await relay.close()


async def test_two_relays_on_one_outbox_keep_each_aggregates_order(
    engine: AsyncEngine, broker: Broker, pg_database: str
) -> None:
    await _write_interleaved(engine, aggregates=100, per_aggregate=5)
    second_engine = create_engine(pg_database)
    relays = [
        OutboxRelay(e, outbox, "ordermesh/order", _settings(broker, outbox_batch_size=7))
        for e in (engine, second_engine)
    ]
    # One pass each first, so that both take a share however fast the other drains
    # the rest (a relay that finds every bucket taken waits a poll interval).
    assert [await r.publish_once() for r in relays] == [7, 7]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        for _ in range(300):  # bounded: 30 s
            if await _unpublished(engine) == 0:
                break
            await asyncio.sleep(0.1)
        assert await _unpublished(engine) == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await second_engine.dispose()
    assert all(r.published > 0 for r in relays), "both relays took a share"
    seen: dict[str, list[int]] = defaultdict(list)
    for record in await read_topic(broker.bootstrap, TOPIC, expect=500):
        event = events_pb2.OrderCreated.FromString(record.value)
        if event.order_id.startswith("agg-"):
            seen[event.order_id].append(int(event.customer_id))
    assert len(seen) == 100
    for history in seen.values():
        assert history == sorted(history), "an aggregate's events went out of order"
        assert set(history) == set(range(5))


async def test_records_carry_key_cloudevents_headers_and_a_decodable_payload(
    engine: AsyncEngine, broker: Broker
) -> None:
    async with Transactions(engine).begin() as session:
        event = DomainEvent("order", "o-headers", events_pb2.OrderConfirmed(order_id="o-headers"))
        await Outbox(outbox).add(session, [event])
    relay = OutboxRelay(engine, outbox, "ordermesh/order", _settings(broker))
    assert await relay.publish_once() == 1
    records = [
        r for r in await read_topic(broker.bootstrap, TOPIC, expect=1) if r.key == b"o-headers"
    ]
    assert len(records) == 1
    headers = header_map(records[0].headers)
    assert headers["ce_id"].decode() == event.event_id
    assert headers["ce_type"] == b"ordermesh.events.v1.OrderConfirmed"
    assert headers["ce_source"] == b"ordermesh/order"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/protobuf"
    assert headers["ce_time"].endswith(b"Z")
    assert events_pb2.OrderConfirmed.FromString(records[0].value).order_id == "o-headers"


async def test_without_an_exporter_records_carry_the_writers_trace_context(
    engine: AsyncEngine, broker: Broker, otlp_endpoint: Callable[[str], None]
) -> None:
    # No endpoint: no PRODUCER span is made, and the record continues the trace of
    # the request that wrote the row, so the consumer still joins that trace.
    otlp_endpoint("")
    writer = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    token = otel_context.attach(context_from_traceparent(writer))
    try:
        async with Transactions(engine).begin() as session:
            await Outbox(outbox).add(
                session,
                [DomainEvent("order", "o-trace", events_pb2.OrderCreated(order_id="o-trace"))],
            )
    finally:
        otel_context.detach(token)
    relay = OutboxRelay(engine, outbox, "ordermesh/order", _settings(broker))
    assert await relay.publish_once() == 1
    records = [
        r for r in await read_topic(broker.bootstrap, TOPIC, expect=1) if r.key == b"o-trace"
    ]
    assert [header_map(r.headers)["traceparent"].decode() for r in records] == [writer]


async def test_with_the_broker_away_rows_wait_and_then_drain(
    engine: AsyncEngine, broker: Broker
) -> None:
    relay = OutboxRelay(
        engine, outbox, "ordermesh/order", _settings(broker, kafka_request_timeout_s=1.0)
    )
    task = asyncio.create_task(relay.run())
    try:
        with broker.paused():
            await _write_interleaved(engine, aggregates=5, per_aggregate=2)
            await asyncio.sleep(2.5)
            assert await _unpublished(engine) == 10  # nothing is deleted without an ack
        await until_outbox_empty(engine)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_on_sqlite_a_broker_that_does_not_answer_holds_no_writer_up(
    tmp_path: Path, broker: Broker
) -> None:
    """SQLite has one write lock. A relay that held it while the broker acknowledged
    made every writer of its service (its requests too) wait out the busy timeout and
    fail with "database is locked" for as long as the broker was slow."""
    url = f"sqlite:///{tmp_path / 'order.db'}"
    await upgrade_to_head("ordermesh_order:migrations", url, "order")
    engine = create_engine(url)
    relay = OutboxRelay(
        engine, outbox, "ordermesh/order", _settings(broker, kafka_request_timeout_s=30.0)
    )
    task = asyncio.create_task(relay.run())
    try:
        await _write_interleaved(engine, aggregates=1, per_aggregate=1)
        await until_outbox_empty(engine)  # the producer is connected
        with broker.paused():
            await _write_interleaved(engine, aggregates=2, per_aggregate=1)
            await asyncio.sleep(1.0)  # the relay has read them and waits for the broker
            await _write_interleaved(engine, aggregates=3, per_aggregate=1)
            assert (relay.published, await _unpublished(engine)) == (1, 5)
        await until_outbox_empty(engine)
        assert relay.published == 6
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()


def _start_relay(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`ordermesh relay order`: the relay as its own process, as beside a service."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ordermesh_cli", "relay", "order"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_relay_killed_mid_batch_loses_nothing(
    engine: AsyncEngine, broker: Broker, pg_database: str, tmp_path: Path
) -> None:
    await _write_interleaved(engine, aggregates=50, per_aggregate=60)  # 3000 events
    async with engine.connect() as conn:
        written = set((await conn.execute(select(outbox.c.event_id))).scalars())
    env = {
        **os.environ,
        "ORDERMESH_DATABASE_URL": pg_database,
        "ORDERMESH_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ORDERMESH_OUTBOX_BATCH_SIZE": "50",
    }
    log = tmp_path / "relay.log"
    relay = _start_relay(env, log)
    for _ in range(600):  # bounded: 60 s, until it is part-way through
        left = await _unpublished(engine)
        if left < len(written):
            break
        await asyncio.sleep(0.1)
    relay.send_signal(signal.SIGKILL)
    relay.wait()
    assert 0 < await _unpublished(engine) < len(written), "the kill came mid-way"
    relay = _start_relay(env, log)
    try:
        for _ in range(600):  # bounded: 60 s
            if await _unpublished(engine) == 0:
                break
            await asyncio.sleep(0.1)
        assert await _unpublished(engine) == 0
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    on_the_wire = [
        header_map(r.headers)["ce_id"].decode()
        for r in await read_topic(broker.bootstrap, TOPIC, expect=len(written), timeout_s=60)
    ]
    assert written <= set(on_the_wire), "an event is missing"
