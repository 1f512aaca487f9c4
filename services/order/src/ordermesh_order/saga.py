"""The order saga, declared as data, and the runner that drives an order through it.

Forward steps run in order; each has a compensation. Every step and compensation is
idempotent (keyed by the order id downstream), so the runner may repeat any of them
after a crash, and two runners on one order cannot double an effect. What the order
still owes is persisted with it (``Order.work``), so the recovery worker finishes
whatever a crash interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from opentelemetry.trace import Span
from structlog.contextvars import bound_contextvars

from ordermesh_messaging.unit_of_work import UnitsOfWork
from ordermesh_order.domain import Order, OrderLine, Reason, Work, priced_lines
from ordermesh_order.store import DueOrder, NewOrder, OrderRepository, outbox
from ordermesh_order.watch import OrderWatch
from ordermesh_platform.batching import LiveBatcher
from ordermesh_platform.db import Transactions, is_connection_error
from ordermesh_platform.deadlines import detached
from ordermesh_platform.faults import kill_at
from ordermesh_platform.logs import get_logger
from ordermesh_platform.metrics import SAGA_OUTCOMES
from ordermesh_platform.resilience import Transient, retry_until
from ordermesh_platform.telemetry import (
    child_span,
    context_from_traceparent,
    record_error,
    tracer,
    untraced,
)

log = get_logger(__name__)


# Of a waiting caller's time, what the forward steps leave for compensating and answering.
ANSWER_RESERVE_SHARE = 0.2
MAX_ANSWER_RESERVE_S = 0.3
# Orders one recovery pass takes up at most; a pass that took this many is followed by
# the next at once (``recovery_behind``), so a backlog of owed work after a crash or an
# outage is not taken up at 50 orders per recovery interval.
RECOVERY_BATCH = 50


class StepFailed(Exception):
    """A participant said no for good (out of stock, declined): reject, never retry."""

    def __init__(
        self,
        reason: Reason,
        detail: str,
        metadata: dict[str, str] | None = None,
        risk_assessment: str = "",
    ):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.metadata = metadata or {}
        # Payment's risk assessment of a risk decline, as JSON; "" for any other refusal.
        self.risk_assessment = risk_assessment


class Participants(Protocol):
    """The saga's view of inventory and payment. Transient failures raise
    ``Transient``; final refusals raise :class:`StepFailed`."""

    async def reserve_stock(self, order: Order, timeout_s: float) -> dict[str, int]: ...
    async def release_stock(self, order_id: str, timeout_s: float) -> None: ...
    async def commit_stock(self, order_id: str, timeout_s: float) -> None: ...
    async def authorize_payment(
        self, order: Order, priced: tuple[OrderLine, ...], timeout_s: float
    ) -> Authorization: ...
    async def void_payment(self, order_id: str, timeout_s: float) -> bool: ...
    async def capture_payment(self, order_id: str, timeout_s: float) -> None: ...
    async def refund_payment(self, order_id: str, timeout_s: float) -> None: ...


@dataclass
class SagaContext:
    """What the forward steps learn on the way."""

    order: Order
    unit_prices: dict[str, int] = field(default_factory=dict)
    payment_id: str = ""
    risk_assessment: str = ""


@dataclass(frozen=True)
class Authorization:
    """Payment's answer to an order's authorization."""

    payment_id: str
    risk_assessment: str = ""  # its risk assessment as JSON; "" when it sent none


Action = Callable[[Participants, SagaContext, float], Awaitable[None]]
Compensation = Callable[[Participants, Order, float], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    name: str
    action: Action
    compensation: Compensation
    # The rejection reason when the step cannot finish before the saga's deadline.
    timeout_reason: Reason


async def _reserve_stock(p: Participants, ctx: SagaContext, timeout_s: float) -> None:
    ctx.unit_prices = await p.reserve_stock(ctx.order, timeout_s)


async def _release_stock(p: Participants, order: Order, timeout_s: float) -> None:
    await p.release_stock(order.order_id, timeout_s)


async def _authorize_payment(p: Participants, ctx: SagaContext, timeout_s: float) -> None:
    lines = priced_lines(ctx.order.lines, ctx.unit_prices)
    total = sum(x.total_minor or 0 for x in lines)
    if total == 0:
        return  # a free order: nothing to charge, so no payment (docs/order-flow.md)
    authorization = await p.authorize_payment(ctx.order, lines, timeout_s)
    ctx.payment_id = authorization.payment_id
    ctx.risk_assessment = authorization.risk_assessment


async def _void_payment(p: Participants, order: Order, timeout_s: float) -> None:
    # Even with no payment: the void leaves a tombstone that an authorization still
    # in flight cannot pass.
    await p.void_payment(order.order_id, timeout_s)


async def _void_or_refund_payment(p: Participants, order: Order, timeout_s: float) -> None:
    if not order.payment_id:
        return  # a confirmed free order: no payment to give back
    if not await p.void_payment(order.order_id, timeout_s):  # captured already
        await p.refund_payment(order.order_id, timeout_s)


async def _capture_payment(p: Participants, order: Order, timeout_s: float) -> None:
    if order.payment_id:  # a confirmed free order has none
        await p.capture_payment(order.order_id, timeout_s)


async def _commit_stock(p: Participants, order: Order, timeout_s: float) -> None:
    await p.commit_stock(order.order_id, timeout_s)


# PlaceOrder: reserve, then authorize, then confirm. Adding a step is one line.
PLACE_ORDER: tuple[Step, ...] = (
    Step("reserve_stock", _reserve_stock, _release_stock, Reason.SAGA_TIMEOUT),
    Step("authorize_payment", _authorize_payment, _void_payment, Reason.PAYMENT_UNAVAILABLE),
)
# What each kind of owed work runs. Compensations are independent, so they run side by
# side: a payment outage must not keep stock held.
COMPENSATIONS: tuple[Compensation, ...] = tuple(s.compensation for s in reversed(PLACE_ORDER))
FULFILMENT: tuple[Compensation, ...] = (_capture_payment, _commit_stock)  # in order
CANCELLATION: tuple[Compensation, ...] = (_void_or_refund_payment, _release_stock)


@dataclass(frozen=True)
class SagaSettings:
    saga_timeout_s: float
    step_timeout_s: float
    compensation_budget_s: float
    lease_s: float
    fault_point: str = ""
    # Sagas driven after an answer (wait_for_outcome=false, capture and commit) and by
    # the recovery worker, at once. Past it, asynchronous PlaceOrder is shed.
    max_background: int = 256
    # Orders written in one transaction at most, and such transactions at once.
    batch_max_size: int = 256
    batch_in_flight: int = 1
    # The least time between two batches of work done after the answer (capture, commit
    # and the order's last save): they gather more orders each, nobody waits for them.
    fulfil_interval_s: float = 0.0


def _span(name: str, order: Order) -> AbstractContextManager[Span]:
    """A span per saga step, named for the step, carrying the order id."""
    return child_span(name, {"ordermesh.order_id": order.order_id})


class SagaRunner:
    def __init__(
        self,
        sessions: Transactions,
        participants: Participants,
        watch: OrderWatch,
        settings: SagaSettings,
        owner: str | None = None,
    ) -> None:
        self._work = UnitsOfWork(sessions, outbox)
        self._participants = participants
        self._watch = watch
        self.settings = settings
        self.owner = owner or f"order-{uuid.uuid4().hex[:12]}"
        self._background: set[asyncio.Task[Order | None]] = set()
        # The runner is the one writer of orders: new ones and every later version go
        # through these, so concurrent sagas share their transactions.
        self._inserts: LiveBatcher[NewOrder, Order | None] = LiveBatcher(
            "order_insert", self._insert_batch, settings.batch_max_size, settings.batch_in_flight
        )
        self._saves: LiveBatcher[tuple[Order, bool], bool] = LiveBatcher(
            "order_save", self._save_batch, settings.batch_max_size, settings.batch_in_flight
        )
        # The fulfilled orders' last saves, apart: spaced out, they never hold back a
        # save a caller waits for.
        self._fulfilled_saves: LiveBatcher[tuple[Order, bool], bool] = LiveBatcher(
            "order_save_fulfilled",
            self._save_batch,
            settings.batch_max_size,
            settings.batch_in_flight,
            settings.fulfil_interval_s,
        )
        # Orders this runner drives now (a count: one may be driven twice at once), and
        # the one task that renews all their leases.
        self._held: Counter[str] = Counter()
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- entry points ----------------------------------------------------------------

    async def drive(
        self,
        order_id: str,
        deadline: float | None = None,
        until_decided: bool = False,
        order: Order | None = None,
    ) -> Order | None:
        """Do everything the order owes, as far as ``deadline`` (monotonic; None: the
        saga's own deadline) allows; with ``until_decided``, stop once it is confirmed
        (what a waiting caller needs: capture and commit can follow). Returns the order
        as it was left. ``order``, when given, is the order as just written (saves a read).
        """
        with self._holding(order_id), bound_contextvars(order_id=order_id):
            return await self._drive(order_id, deadline, until_decided, order)

    async def _drive(
        self, order_id: str, deadline: float | None, until_decided: bool, order: Order | None
    ) -> Order | None:
        if order is None:
            order = await self._load(order_id)
        while order is not None and order.work is not Work.NONE:
            if until_decided and order.work is Work.FULFIL:
                break
            before = (order.version, order.work)
            order = await self._step(order, deadline)
            if order is None or (order.version, order.work) == before:
                break  # no progress possible now: the recovery worker retries later
        return order

    @property
    def background_full(self) -> bool:
        """Whether as many sagas run in the background as the settings allow."""
        return len(self._background) >= self.settings.max_background

    def drive_in_background(self, order_id: str, order: Order | None = None) -> None:
        """``order``, when given, is the order as this runner last wrote it (saves a read)."""
        task = asyncio.create_task(
            self._drive_unattended(order_id, order=order), name=f"saga-{order_id}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drive_unattended(self, order_id: str, order: Order | None = None) -> None:
        """``drive`` where nobody awaits the result (a background task, the recovery
        worker): a failure is logged here, once, with the order id, and goes no
        further. The order keeps its owed work; its lease lapses and the recovery
        worker takes it up again."""
        try:
            with detached():  # the call that started it, if any, is answered: no deadline
                await self.drive(order_id, order=order)
        except Exception as error:
            if is_connection_error(error):  # an outage, not a bug: no traceback
                log.warning(
                    "order saga stopped: database unreachable; recovery will resume it",
                    order_id=order_id,
                    error=repr(error),
                )
            else:
                log.exception("order saga failed; recovery will resume it", order_id=order_id)

    async def recover_once(self, limit: int = RECOVERY_BATCH) -> int:
        """Take up orders whose work is owed and whose runner is gone (crash, restart),
        as many as there are free background slots; how many."""
        limit = min(limit, self.settings.max_background - len(self._background))
        if limit <= 0:
            return 0
        now = datetime.now(UTC)
        with untraced():
            async with self._work.read() as session:
                due = await OrderRepository(session).with_work_due(now, limit)
            if not due:
                return 0
            async with self._work.begin() as work:
                ids = await OrderRepository(work.connection).take_leases(
                    [found.order_id for found in due],
                    self.owner,
                    now,
                    now + timedelta(seconds=self.settings.lease_s),
                )
            taken = [found for found in due if found.order_id in ids]
            if not taken:
                return 0
            # Every taken order read at once, after its lease is ours: its sagas then
            # share the hops' batches like any others.
            async with self._work.read() as session:
                loaded = await OrderRepository(session).get_many([f.order_id for f in taken])
        log.info("recovering orders", count=len(taken))
        await asyncio.gather(*(self._recover(f, loaded.get(f.order_id)) for f in taken))
        return len(taken)

    @staticmethod
    def recovery_behind(recovered: int) -> bool:
        """Whether a recovery pass that took up ``recovered`` orders found more owed
        than one pass takes: then the next starts at once."""
        return recovered >= RECOVERY_BATCH

    async def _recover(self, found: DueOrder, order: Order | None) -> None:
        """Drive a taken-up order under a span in the trace it was placed in, so that
        its trace shows how it ended, crash or not."""
        with tracer().start_as_current_span(
            "saga recover",
            context=context_from_traceparent(found.traceparent, found.tracestate),
            attributes={"ordermesh.order_id": found.order_id, "ordermesh.recovered": True},
        ):
            await self._drive_unattended(found.order_id, order=order)

    async def stop(self) -> None:
        """Let background sagas stop where they are; their leases expire and the
        recovery worker of this or another replica takes them up."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # Stopped, not cancelled: a renewal cut off mid-transaction would cost the pool
        # its connection (a cancelled connection is closed, not reused).
        self._stopping.set()
        if self._heartbeat is not None:
            with contextlib.suppress(Exception):
                await self._heartbeat

    # -- writing orders ------------------------------------------------------------------

    async def accept(self, new: NewOrder) -> Order | None:
        """Write a new order (in a batch with whatever else is being placed): None when
        written, else the order its (customer, key) already names."""
        return await self._inserts.submit(new)

    async def save(self, order: Order, priced: bool = False, fulfilled: bool = False) -> bool:
        """Write the order if nobody changed it since it was read; False when stale.
        ``fulfilled``: the save after capture and commit, which nobody waits for."""
        saves = self._fulfilled_saves if fulfilled else self._saves
        written = await saves.submit((order, priced))
        if written:
            self._watch.changed(order.order_id)
        return written

    async def _insert_batch(self, batch: Sequence[NewOrder]) -> list[Order | None]:
        async with self._work.single() as work:
            repository = OrderRepository(work.connection)
            # One statement: the orders, their lines and their OrderCreated, of each order
            # written (a replayed key writes none of the three).
            work.record(event for new in batch for event in new.order.pull_events())
            written = await work.write(*repository.insert_writes(batch), events_of_written=True)
            existing = await repository.existing(batch, {row.order_id for row in written})
        self._fault_point("after_insert")
        return existing

    async def _save_batch(self, batch: Sequence[tuple[Order, bool]]) -> list[bool]:
        # An order saved twice in one batch: the first write wins, the second is stale
        # (as it would be one transaction later), so one statement never sees it twice.
        first: dict[str, int] = {}
        for i, (order, _) in enumerate(batch):
            first.setdefault(order.order_id, i)
        unique = [batch[i] for i in first.values()]
        async with self._work.single() as work:
            # One statement: each order still as read, its prices, and its events (a
            # stale order writes none of them, and is read again by its runner).
            work.record(event for order, _ in unique for event in order.pull_events())
            rows = await work.write(*OrderRepository.save_writes(unique), events_of_written=True)
            saved = OrderRepository.saved(unique, {row.order_id for row in rows})
            written = dict(zip(first, saved, strict=True))
        return [i == first[o.order_id] and written[o.order_id] for i, (o, _) in enumerate(batch)]

    # -- one unit of owed work ---------------------------------------------------------

    async def _step(self, order: Order, deadline: float | None) -> Order | None:
        match order.work:
            case Work.FORWARD:
                return await self._forward(order, deadline)
            case Work.COMPENSATE:
                return await self._finish(order, Work.COMPENSATE, COMPENSATIONS, deadline)
            case Work.FULFIL:
                return await self._finish(order, Work.FULFIL, FULFILMENT, deadline, parallel=False)
            case Work.CANCEL:
                return await self._finish(order, Work.CANCEL, CANCELLATION, deadline)
        return order

    def _saga_deadline(self, order: Order, answer_by: float | None) -> float:
        """When the forward steps must have finished: the saga timeout counted from the
        order's creation, or earlier when a waiting caller must be answered, keeping
        back part of its time for the compensations and the answer."""
        now = time.monotonic()
        age = (datetime.now(UTC) - order.created_at).total_seconds()
        deadline = now + self.settings.saga_timeout_s - age
        if answer_by is None:
            return deadline
        reserve = min(MAX_ANSWER_RESERVE_S, ANSWER_RESERVE_SHARE * max(0.0, answer_by - now))
        return min(deadline, answer_by - reserve)

    async def _forward(self, order: Order, caller_deadline: float | None) -> Order | None:
        deadline = self._saga_deadline(order, caller_deadline)
        ctx = SagaContext(order)
        for step in PLACE_ORDER:
            with _span(f"saga {step.name}", order) as span:
                try:
                    await retry_until(
                        lambda timeout, s=step: s.action(self._participants, ctx, timeout),  # type: ignore[misc]
                        deadline,
                        self.settings.step_timeout_s,
                    )
                except StepFailed as failure:
                    record_error(span, failure)
                    return await self._reject(
                        order, failure.reason, failure.detail, failure.metadata,
                        failure.risk_assessment,
                    )  # fmt: skip
                except Transient as error:
                    record_error(span, error)
                    detail = f"{step.name} did not succeed before the deadline"
                    return await self._reject(order, step.timeout_reason, detail, {})
            self._fault_point(f"after_{step.name}")
        with _span("saga confirm", order):
            order.confirm(
                priced_lines(order.lines, ctx.unit_prices), ctx.payment_id, ctx.risk_assessment
            )
            saved = await self._save(order, priced=True)
        if saved is order:  # our write decided it, not another runner's: count it once
            SAGA_OUTCOMES.labels("confirmed", "").inc()
        return saved

    async def _reject(
        self,
        order: Order,
        reason: Reason,
        detail: str,
        metadata: dict[str, str],
        risk_assessment: str = "",
    ) -> Order | None:
        log.info("rejecting order", reason=reason.value, detail=detail)
        order.reject(reason, detail, metadata, risk_assessment)
        saved = await self._save(order)
        if saved is order:
            SAGA_OUTCOMES.labels("rejected", reason.value).inc()
        return saved

    async def _finish(
        self,
        order: Order,
        work: Work,
        calls: tuple[Compensation, ...],
        caller_deadline: float | None,
        parallel: bool = True,
    ) -> Order | None:
        deadline = time.monotonic() + self.settings.compensation_budget_s
        if caller_deadline is not None:
            deadline = min(deadline, caller_deadline)

        async def run(call: Compensation) -> None:
            with _span(f"saga {work.value.lower()} {call.__name__.lstrip('_')}", order) as span:
                try:
                    await retry_until(
                        lambda timeout: call(self._participants, order, timeout),
                        deadline,
                        self.settings.step_timeout_s,
                    )
                except (Transient, StepFailed) as error:
                    record_error(span, error)
                    raise

        try:
            with _span(f"saga {work.value.lower()}", order):
                if parallel:
                    await asyncio.gather(*(run(call) for call in calls))
                else:
                    for call in calls:
                        await run(call)
        except (Transient, StepFailed) as error:
            log.warning(
                "owed work not finished; will retry",
                order_id=order.order_id,
                work=work.value,
                error=str(error),
            )
            return order
        order.work_done(work)
        return await self._save(order, fulfilled=work is Work.FULFIL)

    # -- persistence -------------------------------------------------------------------

    async def _load(self, order_id: str) -> Order | None:
        async with self._work.read() as session:
            return await OrderRepository(session).get(order_id)

    async def _save(
        self, order: Order, priced: bool = False, fulfilled: bool = False
    ) -> Order | None:
        """``order`` itself once written; else the order as another writer left it."""
        if await self.save(order, priced, fulfilled):
            return order
        # Another runner (or a cancellation) moved the order first: continue from what
        # it is now, never from what we thought it was.
        return await self._load(order.order_id)

    @contextlib.contextmanager
    def _holding(self, order_id: str) -> Iterator[None]:
        """Keep our lease on the order renewed while we work on it, so the recovery
        worker leaves it alone."""
        self._held[order_id] += 1
        if self._heartbeat is None or self._heartbeat.done():
            # In a context of its own: it serves every order, not the one that started it.
            self._heartbeat = asyncio.create_task(
                self._renew_leases(), name="lease-heartbeat", context=contextvars.Context()
            )
        try:
            yield
        finally:
            self._held[order_id] -= 1
            if not self._held[order_id]:
                del self._held[order_id]

    async def _renew_leases(self) -> None:
        """One statement every half lease renews (or takes, once expired) the lease of
        every order this runner drives."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.lease_s / 2)
                return
            held = list(self._held)
            if not held:
                continue
            now = datetime.now(UTC)
            until = now + timedelta(seconds=self.settings.lease_s)
            try:
                with untraced():
                    async with self._work.begin() as work:
                        await OrderRepository(work.connection).take_leases(
                            held, self.owner, now, until
                        )
            except Exception as error:  # the next beat tries again; the leases may lapse
                log.warning("lease renewal failed", orders=len(held), error=repr(error))

    def _fault_point(self, name: str) -> None:
        kill_at(self.settings.fault_point, name)
