"""The saga's declared steps and compensations, run with fake participants (no network)
over the order store on a throw-away SQLite file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event
from structlog.testing import capture_logs

from ordermesh.common.v1 import risk_pb2
from ordermesh_order.api import order_to_pb
from ordermesh_order.domain import Order, OrderLine, OrderState, PlaceOrder, Reason, Work
from ordermesh_order.saga import (
    PLACE_ORDER,
    RECOVERY_BATCH,
    Authorization,
    SagaRunner,
    SagaSettings,
    StepFailed,
)
from ordermesh_order.store import OrderRepository
from ordermesh_order.usecases import Orders
from ordermesh_order.watch import OrderWatch
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.errors import Overloaded
from ordermesh_platform.migrations import upgrade_to_head
from ordermesh_platform.resilience import Transient
from ordermesh_platform.workers import run_periodically

SETTINGS = SagaSettings(
    saga_timeout_s=2.0, step_timeout_s=0.5, compensation_budget_s=0.5, lease_s=0.2
)


class FakeParticipants:
    """Records every call; ``fail`` maps a call name to what it raises next."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, list[Exception]] = {}
        self.captured = False
        self.unit_price = 250
        self.risk_assessment = ""  # what payment answers of risk scoring ("": risk off)

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        failures = self.fail.get(name)
        if failures:
            raise failures.pop(0)

    async def reserve_stock(self, order: Order, timeout_s: float) -> dict[str, int]:
        self._enter("reserve")
        return {x.sku: self.unit_price for x in order.lines}

    async def release_stock(self, order_id: str, timeout_s: float) -> None:
        self._enter("release")

    async def commit_stock(self, order_id: str, timeout_s: float) -> None:
        self._enter("commit")

    async def authorize_payment(
        self, order: Order, priced: tuple[OrderLine, ...], timeout_s: float
    ) -> Authorization:
        self._enter("authorize")
        assert priced == tuple(replace(x, unit_price_minor=self.unit_price) for x in order.lines)
        return Authorization("pay-1", self.risk_assessment)

    async def void_payment(self, order_id: str, timeout_s: float) -> bool:
        self._enter("void")
        return not self.captured

    async def capture_payment(self, order_id: str, timeout_s: float) -> None:
        self._enter("capture")
        self.captured = True

    async def refund_payment(self, order_id: str, timeout_s: float) -> None:
        self._enter("refund")


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Transactions]:
    url = f"sqlite+aiosqlite:///{tmp_path}/order.db"
    await upgrade_to_head("ordermesh_order:migrations", url, "order")
    engine = create_engine(url)
    yield Transactions(engine)
    await engine.dispose()


async def _new_order(
    sessions: Transactions, created: datetime | None = None, lease_s: float = 5
) -> str:
    order = Order.place(
        str(uuid.uuid4()),
        PlaceOrder.validated("c1", uuid.uuid4().hex, [("TEA", 2), ("MUG", 1)], "EUR", "tok_ok"),
        now=created,
    )
    async with sessions.begin() as session:
        lease = datetime.now(UTC) + timedelta(seconds=lease_s)
        assert await OrderRepository(session).add(order, "someone", lease)
    return order.order_id


def _runner(sessions: Transactions, fake: FakeParticipants) -> SagaRunner:
    return SagaRunner(sessions, fake, OrderWatch(), SETTINGS)


def test_place_order_is_declared_as_reserve_then_authorize() -> None:
    assert [s.name for s in PLACE_ORDER] == ["reserve_stock", "authorize_payment"]


async def test_the_happy_path_confirms_then_captures_and_commits(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    order = await _runner(sessions, fake).drive(await _new_order(sessions))
    assert order is not None
    assert (order.state, order.work) == (OrderState.CONFIRMED, Work.NONE)
    assert order.total_minor == 750
    assert fake.calls == ["reserve", "authorize", "capture", "commit"]
    assert order.risk_assessment == ""  # risk scoring off: payment sent none


async def test_the_confirmed_order_keeps_the_risk_assessment_payment_answered(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.risk_assessment = '{"score": 0.12, "decision": "RISK_DECISION_APPROVE"}'
    order_id = await _new_order(sessions)
    await _runner(sessions, fake).drive(order_id)
    async with sessions.begin() as session:
        stored = await OrderRepository(session).get(order_id)
    assert stored is not None
    assert stored.risk_assessment == fake.risk_assessment
    assert order_to_pb(stored).risk_assessment == risk_pb2.RiskAssessment(
        score=0.12, decision=risk_pb2.RISK_DECISION_APPROVE
    )
    assert not order_to_pb(replace(stored, risk_assessment="")).HasField("risk_assessment")


async def test_a_decline_rejects_and_fires_every_compensation(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.fail["authorize"] = [StepFailed(Reason.PAYMENT_DECLINED, "card_declined")]
    order = await _runner(sessions, fake).drive(await _new_order(sessions))
    assert order is not None
    assert (order.state, order.reason, order.work) == (
        OrderState.REJECTED,
        Reason.PAYMENT_DECLINED,
        Work.NONE,
    )
    assert fake.calls[:2] == ["reserve", "authorize"]
    assert sorted(fake.calls[2:]) == ["release", "void"]


async def test_out_of_stock_rejects_before_any_payment_is_asked(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.fail["reserve"] = [StepFailed(Reason.OUT_OF_STOCK, "TEA: none left", {"sku": "TEA"})]
    order = await _runner(sessions, fake).drive(await _new_order(sessions))
    assert order is not None
    assert order.reason is Reason.OUT_OF_STOCK
    assert order.reason_metadata == {"sku": "TEA"}
    assert "authorize" not in fake.calls
    # Compensations are idempotent, so a void of a payment never made is harmless,
    # and it stops an authorization still in flight from landing later.
    assert sorted(fake.calls[1:]) == ["release", "void"]


async def test_transient_failures_are_retried_within_the_deadline(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.fail["reserve"] = [Transient("blip")]
    fake.fail["authorize"] = [Transient("blip"), Transient("blip")]
    order = await _runner(sessions, fake).drive(await _new_order(sessions))
    assert order is not None
    assert order.state is OrderState.CONFIRMED
    assert fake.calls.count("authorize") == 3


async def test_payment_unreachable_until_the_deadline_rejects_as_unavailable(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.fail["authorize"] = [Transient("down")] * 1000
    order = await _runner(sessions, fake).drive(await _new_order(sessions))
    assert order is not None
    assert (order.state, order.reason) == (OrderState.REJECTED, Reason.PAYMENT_UNAVAILABLE)
    assert "release" in fake.calls


async def test_an_unfinished_compensation_is_owed_and_finished_by_recovery(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.fail["authorize"] = [StepFailed(Reason.PAYMENT_DECLINED, "no")]
    fake.fail["void"] = [Transient("down")] * 1000
    runner = _runner(sessions, fake)
    order = await runner.drive(await _new_order(sessions, lease_s=-1))
    assert order is not None
    assert (order.state, order.work) == (OrderState.REJECTED, Work.COMPENSATE)
    fake.fail["void"] = []  # payment is back
    await asyncio.sleep(2 * SETTINGS.lease_s)
    assert await runner.recover_once() == 1
    async with sessions() as session:
        recovered = await OrderRepository(session).get(order.order_id)
    assert recovered is not None
    assert recovered.work is Work.NONE


async def test_recovery_resumes_an_order_whose_runner_died(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    order_id = await _new_order(sessions, lease_s=-1)  # the lease of a dead runner
    assert await _runner(sessions, fake).recover_once() == 1
    async with sessions() as session:
        order = await OrderRepository(session).get(order_id)
    assert order is not None
    assert order.state is OrderState.CONFIRMED


class SlowParticipants(FakeParticipants):
    async def reserve_stock(self, order: Order, timeout_s: float) -> dict[str, int]:
        await asyncio.sleep(2 * SETTINGS.lease_s)  # under the step timeout
        return await super().reserve_stock(order, timeout_s)


async def test_a_running_saga_renews_its_lease_so_no_other_runner_takes_it(
    sessions: Transactions,
) -> None:
    invalidated: list[object] = []
    event.listen(sessions.engine.sync_engine.pool, "invalidate", lambda *a: invalidated.append(a))
    order_id = await _new_order(sessions, lease_s=-1)
    driving = asyncio.create_task(_runner(sessions, SlowParticipants()).drive(order_id))
    await asyncio.sleep(1.5 * SETTINGS.lease_s)  # past the lease it took when it began
    assert await _runner(sessions, FakeParticipants()).recover_once() == 0
    order = await driving
    assert order is not None
    assert order.state is OrderState.CONFIRMED
    # The heartbeat is stopped, never cancelled mid-renewal (that would cost the pool
    # the connection it was using).
    assert invalidated == []


async def test_a_backlog_of_owed_orders_is_taken_up_pass_after_pass(
    sessions: Transactions,
) -> None:
    owed = [await _new_order(sessions, lease_s=-1) for _ in range(2 * RECOVERY_BATCH + 5)]
    runner = _runner(sessions, FakeParticipants())
    # An hour between passes, as the service wires it but for the interval: only a pass
    # that follows a full one at once can take up the backlog within the test.
    worker = asyncio.create_task(
        run_periodically("saga-recovery", runner.recover_once, 3600, runner.recovery_behind)
    )

    async def states() -> set[OrderState]:
        async with sessions() as session:
            found = await OrderRepository(session).get_many(owed)
        return {order.state for order in found.values()}

    try:
        for _ in range(400):
            if await states() == {OrderState.CONFIRMED}:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.cancel()
    assert await states() == {OrderState.CONFIRMED}


async def test_recovery_leaves_orders_with_a_live_lease_alone(sessions) -> None:  # type: ignore[no-untyped-def]
    await _new_order(sessions, lease_s=60)
    assert await _runner(sessions, FakeParticipants()).recover_once() == 0


async def test_an_order_past_the_saga_timeout_is_rejected_not_confirmed(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    long_ago = datetime.now(UTC) - timedelta(seconds=60)
    order = await _runner(sessions, fake).drive(await _new_order(sessions, created=long_ago))
    assert order is not None
    assert (order.state, order.reason) == (OrderState.REJECTED, Reason.SAGA_TIMEOUT)
    assert "authorize" not in fake.calls


async def _cancel(sessions: Transactions, runner: SagaRunner, order: Order) -> None:
    """The customer cancels the confirmed order; the runner does what that owes."""
    assert order.cancel(Reason.CANCELLED_BY_CUSTOMER, "")
    async with sessions.begin() as session:
        await OrderRepository(session).save(order)
    cancelled = await runner.drive(order.order_id)
    assert cancelled is not None
    assert (cancelled.state, cancelled.work) == (OrderState.CANCELLED, Work.NONE)


async def test_cancel_after_capture_refunds_instead_of_voiding(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    runner = _runner(sessions, fake)
    order = await runner.drive(await _new_order(sessions))
    assert order is not None
    await _cancel(sessions, runner, order)
    assert {"void", "refund", "release"} <= set(fake.calls)


async def test_a_free_order_is_confirmed_and_cancelled_without_a_payment(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.unit_price = 0
    runner = _runner(sessions, fake)
    order = await runner.drive(await _new_order(sessions))
    assert order is not None
    assert (order.state, order.work, order.total_minor) == (OrderState.CONFIRMED, Work.NONE, 0)
    assert order.payment_id == ""
    assert fake.calls == ["reserve", "commit"]
    await _cancel(sessions, runner, order)
    assert fake.calls == ["reserve", "commit", "release"]


class RacedParticipants(FakeParticipants):
    """While the payment is authorized, another runner confirms the order first."""

    def __init__(self, sessions: Transactions) -> None:
        super().__init__()
        self.sessions = sessions

    async def authorize_payment(
        self, order: Order, priced: tuple[OrderLine, ...], timeout_s: float
    ) -> Authorization:
        async with self.sessions.begin() as session:
            other = await OrderRepository(session).get(order.order_id)
            assert other is not None
            other.confirm(tuple(replace(x, unit_price_minor=250) for x in other.lines), "pay-1")
            await OrderRepository(session).save(other, priced=True)
        return await super().authorize_payment(order, priced, timeout_s)


def _outcomes(outcome: str, reason: str = "") -> float:
    labels = {"outcome": outcome, "reason": reason}
    return REGISTRY.get_sample_value("ordermesh_saga_outcomes_total", labels) or 0.0


async def test_an_order_another_runner_decided_is_not_counted_twice(sessions) -> None:  # type: ignore[no-untyped-def]
    before = _outcomes("confirmed")
    order = await _runner(sessions, RacedParticipants(sessions)).drive(await _new_order(sessions))
    assert order is not None
    assert order.state is OrderState.CONFIRMED
    assert _outcomes("confirmed") == before  # the other runner decided it
    await _runner(sessions, FakeParticipants()).drive(await _new_order(sessions))
    assert _outcomes("confirmed") == before + 1


class BlockedParticipants(FakeParticipants):
    """Reserving stock waits until ``go`` is set: sagas stay in the background."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def reserve_stock(self, order: Order, timeout_s: float) -> dict[str, int]:
        await self.go.wait()
        return await super().reserve_stock(order, timeout_s)


async def test_past_the_background_bound_async_orders_are_shed_before_any_write(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = BlockedParticipants()
    runner = SagaRunner(sessions, fake, OrderWatch(), replace(SETTINGS, max_background=1))
    orders = Orders(sessions, runner, OrderWatch())

    def request() -> PlaceOrder:
        return PlaceOrder.validated("c1", uuid.uuid4().hex, [("TEA", 1)], "EUR", "tok_ok")

    first, _ = await orders.place(request(), wait_for_outcome=False, budget_s=None)
    with pytest.raises(Overloaded) as shed:
        await orders.place(request(), wait_for_outcome=False, budget_s=None)
    assert shed.value.retry_after_s > 0
    # A caller that waits for the outcome is still served: its saga runs in its call.
    fake.go.set()
    waited, _ = await orders.place(request(), wait_for_outcome=True, budget_s=2)
    assert waited.state is OrderState.CONFIRMED
    await runner.stop()
    async with sessions() as session:
        listed = await OrderRepository(session).list_for_customer("c1", None, None, 10)
    assert {o.order_id for o in listed} == {first.order_id, waited.order_id}


async def test_recovery_takes_no_more_than_the_free_background_slots(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = BlockedParticipants()
    runner = SagaRunner(sessions, fake, OrderWatch(), replace(SETTINGS, max_background=1))
    runner.drive_in_background(await _new_order(sessions))
    await _new_order(sessions, lease_s=-1)  # owed, its runner gone
    assert await runner.recover_once() == 0
    fake.go.set()
    await runner.stop()


async def _background_tasks_finish(runner: SagaRunner) -> list[asyncio.Task[object]]:
    tasks = list(runner._background)
    await asyncio.wait(tasks)
    return tasks  # type: ignore[return-value]


async def test_a_background_saga_that_fails_is_logged_once_with_its_order_id(sessions) -> None:  # type: ignore[no-untyped-def]
    fake = FakeParticipants()
    fake.fail["reserve"] = [RuntimeError("a bug in a participant")]
    runner = _runner(sessions, fake)
    order_id = await _new_order(sessions)
    with capture_logs() as logs:
        runner.drive_in_background(order_id)
        tasks = await _background_tasks_finish(runner)
    # Handled in the task: nothing left for "Task exception was never retrieved".
    assert [t.exception() for t in tasks] == [None]
    failed = [x for x in logs if x["log_level"] in ("error", "warning")]
    assert len(failed) == 1, logs
    assert failed[0]["order_id"] == order_id
    assert failed[0]["exc_info"] is True  # a bug keeps its traceback
    await runner.stop()


async def test_a_background_saga_on_an_unreachable_database_logs_one_line() -> None:
    # Nothing listens on port 1: every connection is refused at once.
    engine = create_engine("postgresql://postgres@127.0.0.1:1/ordermesh_order")
    runner = _runner(Transactions(engine), FakeParticipants())
    order_id = str(uuid.uuid4())
    with capture_logs() as logs:
        runner.drive_in_background(order_id)
        tasks = await _background_tasks_finish(runner)
    assert [t.exception() for t in tasks] == [None]
    failed = [x for x in logs if x["log_level"] in ("error", "warning")]
    assert len(failed) == 1, logs
    assert failed[0]["order_id"] == order_id
    assert "database unreachable" in failed[0]["event"]
    assert "exc_info" not in failed[0]  # an outage is no bug: no traceback
    await runner.stop()
    await engine.dispose()
