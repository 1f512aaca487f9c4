"""Inventory batch reservations: one transaction per batch, one answer per order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2 as pb
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh_cli.registry import load_service
from ordermesh_client.errors import OutOfStock, from_status
from ordermesh_inventory.domain import (
    Adjustment,
    Product,
    Reservation,
    ReservationLine,
    ReservationRequest,
    ReservationState,
)
from ordermesh_inventory.store import outbox, reservation_lines, reservations
from ordermesh_inventory.usecases import EXPIRED_PER_SWEEP, Inventory
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
)
from ordermesh_platform.migrations import upgrade_to_head
from tests.support.rich_status import detail
from tests.support.services import running_service
from tests.support.statements import statements

pytestmark = pytest.mark.integration

if TYPE_CHECKING:  # the async stub type exists only in the .pyi
    Stub = inventory_pb2_grpc.InventoryServiceAsyncStub

# sku: (unit price, initial units)
CATALOGUE = {"A": (100, 5), "B": (200, 1), "C": (300, 1000), "D": (400, 1000)}
Levels = dict[str, tuple[int, int, int]]


@dataclass
class Service:
    inventory: Inventory
    engine: AsyncEngine

    async def levels(self) -> Levels:
        stock = await self.inventory.get_stock(sorted(CATALOGUE))
        return {s.sku: (s.available, s.reserved, s.committed) for s in stock}

    async def events(self, order_id: str) -> list[str]:
        """The short type names of the order's events, in order."""
        query = (
            select(outbox.c.event_type)
            .where(outbox.c.aggregate_id == order_id)
            .order_by(outbox.c.seq)
        )
        async with self.engine.connect() as conn:
            return [name.rsplit(".", 1)[-1] for name in (await conn.execute(query)).scalars()]


@pytest.fixture
async def service(any_database: str) -> AsyncIterator[Service]:
    await upgrade_to_head("ordermesh_inventory:migrations", any_database, "inventory")
    engine = create_engine(any_database)
    inventory = Inventory(Transactions(engine))
    for sku, (price, units) in CATALOGUE.items():
        await inventory.upsert_product(Product(sku, sku, price, "EUR"))
        await inventory.adjust_stock(Adjustment(f"seed-{sku}", sku, units, ""))
    yield Service(inventory, engine)
    await engine.dispose()


def ask(order_id: str, currency: str = "EUR", **lines: int) -> ReservationRequest:
    return ReservationRequest(
        order_id, tuple(ReservationLine(s, q) for s, q in lines.items()), currency, 0
    )


def initial() -> Levels:
    return {sku: (units, 0, 0) for sku, (_, units) in CATALOGUE.items()}


def reason_of(answer: Reservation | ServiceError) -> str:
    assert isinstance(answer, FailedPrecondition | Conflict), answer
    return answer.reason_name


def reservation(answer: Reservation | ServiceError) -> Reservation:
    assert isinstance(answer, Reservation), answer
    return answer


# -- the use cases, on both databases ------------------------------------------------------


async def test_exactly_k_of_n_orders_win_the_last_k_units_in_one_batch(service: Service) -> None:
    answers = await service.inventory.reserve_many([ask(f"o{i}", A=1) for i in range(12)])
    assert [isinstance(a, Reservation) for a in answers] == [True] * 5 + [False] * 7
    assert {reason_of(a) for a in answers[5:]} == {"OUT_OF_STOCK"}
    assert await service.levels() == {**initial(), "A": (0, 5, 0)}
    assert await service.events("o4") == ["StockReserved"]
    assert await service.events("o5") == []


async def test_a_failed_item_does_not_fail_its_neighbours(service: Service) -> None:
    answers = await service.inventory.reserve_many(
        [
            ask("ok-1", A=2, C=1),
            ask("short", A=1, B=2),
            ask("", A=1),
            ask("dollars", currency="USD", C=1),
            ask("unknown", C=1, Z=1),
            ask("ok-2", B=1),
        ]
    )
    ok_1, short, invalid, dollars, unknown, ok_2 = answers
    assert [(x.sku, x.quantity, x.unit_price_minor) for x in reservation(ok_1).lines] == [
        ("A", 2, 100),
        ("C", 1, 300),
    ]
    assert reservation(ok_2).state is ReservationState.RESERVED
    assert isinstance(short, FailedPrecondition)
    assert (short.reason_name, short.metadata) == ("OUT_OF_STOCK", {"sku": "B"})
    assert isinstance(invalid, InvalidArgument)
    assert [v.field for v in invalid.violations] == ["order_id"]
    assert reason_of(dollars) == "CURRENCY_MISMATCH"
    assert isinstance(unknown, FailedPrecondition)
    assert (unknown.reason_name, unknown.metadata) == ("OUT_OF_STOCK", {"sku": "Z"})
    assert await service.levels() == {
        **initial(),
        "A": (3, 2, 0),
        "B": (0, 1, 0),
        "C": (999, 1, 0),
    }


async def test_the_same_order_twice_reserves_once_within_and_across_batches(
    service: Service,
) -> None:
    first = await service.inventory.reserve_many([ask("o1", C=2, A=1), ask("o1", A=1, C=2)])
    assert reservation(first[0]) == reservation(first[1])
    again = await service.inventory.reserve_many([ask("o2", A=1), ask("o1", A=1, C=2)])
    assert reservation(again[1]) == first[0]
    single = [ReservationLine("A", 1), ReservationLine("C", 2)]
    assert await service.inventory.reserve("o1", single, "EUR", 0) == first[0]
    other = await service.inventory.reserve_many([ask("o1", A=2)])
    assert reason_of(other[0]) == "RESERVATION_MISMATCH"
    assert await service.levels() == {**initial(), "A": (3, 2, 0), "C": (998, 2, 0)}
    assert await service.events("o1") == ["StockReserved"]


async def test_a_retry_refused_for_new_is_answered_as_the_first_time(service: Service) -> None:
    """The first pass takes every order for new: a retry of an order whose own
    reservation took the last unit would be refused OUT_OF_STOCK there, and must be
    answered with that reservation instead, beside the new orders of its batch."""
    [first] = await service.inventory.reserve_many([ask("o1", B=1)])
    answers = await service.inventory.reserve_many([ask("o2", A=1), ask("o1", B=1)])
    assert reservation(answers[1]) == reservation(first)
    assert reservation(answers[0]).lines[0].sku == "A"
    assert await service.levels() == {**initial(), "A": (4, 1, 0), "B": (0, 1, 0)}
    assert await service.events("o1") == ["StockReserved"]


async def test_concurrent_batches_reserving_one_order_reserve_it_once(service: Service) -> None:
    answers = await asyncio.gather(
        *(service.inventory.reserve_many([ask(f"n{i}", C=1), ask("x", A=2)]) for i in range(4))
    )
    assert len({reservation(a[1]) for a in answers}) == 1
    assert all(reservation(a[0]).state is ReservationState.RESERVED for a in answers)
    assert await service.levels() == {**initial(), "A": (3, 2, 0), "C": (996, 4, 0)}
    assert await service.events("x") == ["StockReserved"]


async def test_a_failed_order_repeated_in_a_batch_fails_alike(service: Service) -> None:
    answers = await service.inventory.reserve_many([ask("big", A=6), ask("big", A=6)])
    assert [(reason_of(a), str(a)) for a in answers] == [
        ("OUT_OF_STOCK", "A: fewer than 6 units available")
    ] * 2
    assert await service.levels() == initial()


async def test_commit_many_and_release_many(service: Service) -> None:
    inventory = service.inventory
    await inventory.reserve_many([ask("o1", A=2, B=1), ask("o2", A=1, C=5)])
    committed = await inventory.commit_many(["o1", "o1", "nope", ""])
    assert reservation(committed[0]).state is ReservationState.COMMITTED
    assert committed[1] == committed[0]
    assert isinstance(committed[2], NotFound)
    assert isinstance(committed[3], InvalidArgument)
    assert await service.levels() == {
        **initial(),
        "A": (2, 1, 2),
        "B": (0, 0, 1),
        "C": (995, 5, 0),
    }

    released = await inventory.release_many(["o1", "o2", "ghost", "o2", "ghost"])
    assert [reservation(a).state for a in released] == [ReservationState.RELEASED] * 5
    assert released[3] == released[1]
    assert released[4] == released[2]
    assert reservation(released[2]).lines == ()
    assert await service.levels() == initial()
    assert await service.events("o1") == ["StockReserved", "StockCommitted", "StockReleased"]
    assert await service.events("ghost") == []

    late = await inventory.reserve_many([ask("ghost", A=1), ask("o3", A=1)])
    assert reason_of(late[0]) == "RESERVATION_RELEASED"
    assert reservation(late[1]).order_id == "o3"
    assert reason_of((await inventory.commit_many(["o2"]))[0]) == "RESERVATION_RELEASED"
    assert (await inventory.release_many(["o1"]))[0] == released[0]
    assert await service.levels() == {**initial(), "A": (4, 1, 0)}


async def test_the_sweeper_releases_only_expired_reservations(service: Service) -> None:
    inventory = service.inventory
    short = ReservationRequest("short", (ReservationLine("A", 2),), "EUR", 0.01)
    await inventory.reserve_many([short, ask("long", A=1), ask("kept", C=1)])
    await inventory.commit("kept")
    await asyncio.sleep(0.05)
    assert await inventory.release_expired() == 1
    assert await service.levels() == {**initial(), "A": (4, 1, 0), "C": (999, 0, 1)}
    assert await service.events("short") == ["StockReserved", "StockReleased"]


async def test_the_statements_per_batch_do_not_grow_with_the_batch(service: Service) -> None:
    async def count(run: Callable[[], Awaitable[object]]) -> int:
        with statements(service.engine) as seen:
            await run()
        return len(seen)

    inventory = service.inventory
    small = [ask(f"s{i}", C=1, D=2) for i in range(5)]
    large = [ask(f"l{i}", C=1, D=2) for i in range(50)]
    assert await count(lambda: inventory.reserve_many(small)) == await count(
        lambda: inventory.reserve_many(large)
    )
    if service.engine.dialect.name == "postgresql":
        # New orders: their stock locked with its prices, then every write and event
        # in one statement.
        with statements(service.engine) as seen:
            await inventory.reserve_many([ask(f"n{i}", C=1) for i in range(3)])
        assert len(seen) == 2, seen
    # Replays of known orders add the read of their lines, whatever their number.
    assert await count(lambda: inventory.reserve_many(small)) == await count(
        lambda: inventory.reserve_many(large)
    )


async def test_commit_and_release_statements_do_not_grow_with_the_batch(
    service: Service,
) -> None:
    if service.engine.dialect.name != "postgresql":
        pytest.skip("on SQLite update_rows runs one UPDATE per row, by design")

    async def count(run: Callable[[], Awaitable[object]]) -> int:
        with statements(service.engine) as seen:
            await run()
        return len(seen)

    inventory = service.inventory
    small = [f"s{i}" for i in range(5)]
    large = [f"l{i}" for i in range(50)]
    await inventory.reserve_many([ask(o, C=1, D=2) for o in small + large])
    commits = [await count(partial(inventory.commit_many, ids)) for ids in (small, large)]
    releases = [
        await count(partial(inventory.release_many, [*ids, f"ghost-{ids[0]}"]))
        for ids in (small, large)
    ]
    assert commits[0] == commits[1]
    assert releases[0] == releases[1]


# -- concurrency, on PostgreSQL --------------------------------------------------------------


async def held_units(engine: AsyncEngine) -> dict[str, int]:
    """Units by SKU that reservations in the RESERVED state hold."""
    query = (
        select(reservation_lines.c.sku, func.sum(reservation_lines.c.quantity))
        .join(reservations, reservations.c.order_id == reservation_lines.c.order_id)
        .where(reservations.c.state == ReservationState.RESERVED.value)
        .group_by(reservation_lines.c.sku)
    )
    async with engine.connect() as conn:
        return {sku: int(units) for sku, units in (await conn.execute(query)).all()}


@pytest.mark.parametrize("any_database", ["postgresql"], indirect=True)
async def test_concurrent_batches_over_overlapping_skus_finish_and_never_oversell(
    service: Service,
) -> None:
    rng = random.Random(7)
    skus = sorted(CATALOGUE)

    def batch(prefix: str) -> list[ReservationRequest]:
        requests = []
        for i in range(40):
            chosen = rng.sample(skus, rng.randint(1, 3))
            # Some order ids in every batch: the batches also race for the same heads.
            order_id = f"shared-{i}" if i % 4 == 0 else f"{prefix}-{i}"
            lines = tuple(ReservationLine(sku, 1) for sku in chosen)
            requests.append(ReservationRequest(order_id, lines, "EUR", 0))
        return requests

    inventory = service.inventory
    refused = 0
    for round_ in range(5):
        shared = [f"shared-{i}" for i in range(0, 40, 8)]
        x, y, released = await asyncio.wait_for(
            asyncio.gather(
                inventory.reserve_many(batch(f"x{round_}")),
                inventory.reserve_many(batch(f"y{round_}")),
                inventory.release_many([*shared, f"gone-{round_}"]),
            ),
            timeout=60,
        )
        assert all(isinstance(a, Reservation) for a in released)
        refused += sum(isinstance(a, FailedPrecondition) for a in x + y)
    levels = await service.levels()
    held = await held_units(service.engine)
    for sku, (available, reserved, committed) in levels.items():
        assert available >= 0
        assert available + reserved + committed == CATALOGUE[sku][1]
        assert reserved == held.get(sku, 0)
    assert refused > 0  # the scarce SKUs were fought over
    for i in range(0, 40, 4):
        assert (await service.events(f"shared-{i}")).count("StockReserved") <= 1


# -- the servicer, over real gRPC ---------------------------------------------------------


@pytest.fixture
async def stub(any_database: str) -> AsyncIterator[Stub]:
    async with (
        running_service(load_service("inventory"), any_database) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for sku, (price, units) in CATALOGUE.items():
            product = pb.Product(
                sku=sku, name=sku, unit_price=money_pb2.Money(amount_minor=price, currency="EUR")
            )
            await stub.UpsertProduct(pb.UpsertProductRequest(product=product))
            await stub.AdjustStock(pb.AdjustStockRequest(adjustment_id=sku, sku=sku, delta=units))
        yield stub


def reserve_pb(order_id: str, **lines: int) -> pb.ReserveStockRequest:
    return pb.ReserveStockRequest(
        order_id=order_id,
        lines=[pb.ReservationLine(sku=s, quantity=q) for s, q in lines.items()],
        ttl=duration_pb2.Duration(seconds=60),
        currency="EUR",
    )


async def test_reserve_stock_batch_answers_each_order_as_the_single_call(stub: Stub) -> None:
    reply = await stub.ReserveStockBatch(
        pb.ReserveStockBatchRequest(
            requests=[reserve_pb("o1", A=1), reserve_pb("o2", B=2), reserve_pb("o3", B=1)]
        )
    )
    ok_1, short, ok_3 = reply.results
    assert ok_1.status.code == ok_3.status.code == code_pb2.OK
    assert [(x.sku, x.unit_price.amount_minor) for x in ok_1.reservation.lines] == [("A", 100)]
    assert ok_3.reservation.state == pb.RESERVATION_STATE_RESERVED
    assert short.status.code == code_pb2.FAILED_PRECONDITION
    assert not short.HasField("reservation")
    refused = from_status(short.status)
    assert isinstance(refused, OutOfStock)
    assert (refused.sku, refused.metadata) == ("B", {"sku": "B"})

    await stub.AdjustStock(pb.AdjustStockRequest(adjustment_id="B+1", sku="B", delta=1))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReserveStock(reserve_pb("single", B=2))
    single = rpc_status.from_call(cast(grpc.Call, raised.value))
    assert single is not None
    assert short.status == single

    commits = await stub.CommitReservationBatch(
        pb.CommitReservationBatchRequest(
            requests=[pb.CommitReservationRequest(order_id=o) for o in ("o1", "o2")]
        )
    )
    assert [r.status.code for r in commits.results] == [code_pb2.OK, code_pb2.NOT_FOUND]
    assert commits.results[0].reservation.state == pb.RESERVATION_STATE_COMMITTED
    releases = await stub.ReleaseReservationBatch(
        pb.ReleaseReservationBatchRequest(
            requests=[pb.ReleaseReservationRequest(order_id=o) for o in ("o1", "o3", "never")]
        )
    )
    assert [r.reservation.state for r in releases.results] == [pb.RESERVATION_STATE_RELEASED] * 3
    stock = await stub.GetStock(pb.GetStockRequest(skus=["A", "B"]))
    assert [(s.available, s.reserved, s.committed) for s in stock.stock] == [(5, 0, 0), (2, 0, 0)]


@pytest.mark.parametrize("count", [0, 1001])
@pytest.mark.parametrize("any_database", ["sqlite"], indirect=True)
async def test_a_batch_of_no_or_too_many_requests_is_invalid(stub: Stub, count: int) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: stub.ReserveStockBatch(
            pb.ReserveStockBatchRequest(requests=[reserve_pb(f"o{i}", A=1) for i in range(count)])
        ),
        lambda: stub.CommitReservationBatch(
            pb.CommitReservationBatchRequest(
                requests=[pb.CommitReservationRequest(order_id=f"o{i}") for i in range(count)]
            )
        ),
        lambda: stub.ReleaseReservationBatch(
            pb.ReleaseReservationBatchRequest(
                requests=[pb.ReleaseReservationRequest(order_id=f"o{i}") for i in range(count)]
            )
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = detail(raised.value, error_details_pb2.BadRequest).field_violations
        assert [v.field for v in violations] == ["requests"]


async def test_the_running_service_releases_a_backlog_of_expired_reservations_at_once(
    any_database: str, service: Service
) -> None:
    backlog = 2 * EXPIRED_PER_SWEEP + 10
    expiring = [
        ReservationRequest(f"lapsed-{i}", (ReservationLine("C", 1),), "EUR", 0.01)
        for i in range(backlog)
    ]
    assert all(isinstance(a, Reservation) for a in await service.inventory.reserve_many(expiring))
    await asyncio.sleep(0.05)
    # An hour between sweeps: only sweeps that follow a full one at once can release it.
    async with running_service(load_service("inventory"), any_database, sweep_interval_s=3600):
        for _ in range(200):
            if (await service.levels())["C"] == (1000, 0, 0):
                break
            await asyncio.sleep(0.05)
    assert (await service.levels())["C"] == (1000, 0, 0)
