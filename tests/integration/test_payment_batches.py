"""Payment batches: one answer per item, the provider asked once per order and side by
side, and as many statements for 40 items as for 4. Over gRPC and on the use cases."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh.common.v1 import money_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from ordermesh.payment.v1 import payment_pb2_grpc
from ordermesh_cli.registry import load_service
from ordermesh_client.errors import OrdermeshError, PaymentDeclined, from_status
from ordermesh_payment.domain import AuthorizationRequest, Payment, PaymentState
from ordermesh_payment.psp import Authorization, ResilientProvider
from ordermesh_payment.simulated_psp import SimulatedProvider
from ordermesh_payment.store import outbox
from ordermesh_payment.usecases import Payments
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.errors import Conflict, FailedPrecondition, ServiceError, Unavailable
from ordermesh_platform.migrations import upgrade_to_head
from ordermesh_platform.resilience import CircuitBreaker
from tests.support.services import running_service
from tests.support.statements import statements

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Stub = payment_pb2_grpc.PaymentServiceAsyncStub


# -- over gRPC -----------------------------------------------------------------------


@pytest.fixture
async def stub(any_database: str) -> AsyncIterator[Stub]:
    async with (
        running_service(load_service("payment"), any_database, psp_timeout_s=0.2) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        yield payment_pb2_grpc.PaymentServiceStub(channel)


def _authorize(
    order_id: str, token: str = "tok_ok", amount: int = 1250
) -> pb.AuthorizePaymentRequest:
    return pb.AuthorizePaymentRequest(
        order_id=order_id,
        customer_id="c1",
        amount=money_pb2.Money(amount_minor=amount, currency="EUR"),
        payment_token=token,
    )


def _failure(result: pb.PaymentResult) -> OrdermeshError:
    assert result.status.code != grpc.StatusCode.OK.value[0], result
    assert not result.HasField("payment")
    return from_status(result.status)


def _reason(result: pb.PaymentResult) -> str:
    return _failure(result).reason_name


async def test_each_authorization_of_a_batch_gets_its_own_answer(stub: Stub) -> None:
    batch = pb.AuthorizePaymentBatchRequest(
        requests=[
            _authorize("o-ok"),
            _authorize("o-declined", token="tok_decline"),
            _authorize("o-invalid", amount=0),
            _authorize("o-silent", token="tok_timeout"),
        ]
    )
    ok, declined, invalid, silent = (await stub.AuthorizePaymentBatch(batch, timeout=3)).results

    assert ok.status.code == grpc.StatusCode.OK.value[0]
    assert (ok.payment.order_id, ok.payment.state) == ("o-ok", pb.PAYMENT_STATE_AUTHORIZED)
    refusal = _failure(declined)
    assert isinstance(refusal, PaymentDeclined)
    assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.decline_reason == "card_declined"
    bad_request = error_details_pb2.BadRequest()
    assert _failure(invalid).code == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["amount.amount_minor"]
    assert _failure(silent).code == grpc.StatusCode.UNAVAILABLE

    got = await stub.GetPayment(pb.GetPaymentRequest(order_id="o-declined"))
    assert got.payment.state == pb.PAYMENT_STATE_DECLINED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetPayment(pb.GetPaymentRequest(order_id="o-invalid"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_batch_of_no_items_or_too_many_is_invalid(stub: Stub) -> None:
    too_many = [pb.CapturePaymentRequest(order_id=f"o{i}") for i in range(1001)]
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.AuthorizePaymentBatch(pb.AuthorizePaymentBatchRequest())
    with pytest.raises(grpc.aio.AioRpcError) as oversized:
        await stub.CapturePaymentBatch(pb.CapturePaymentBatchRequest(requests=too_many))
    with pytest.raises(grpc.aio.AioRpcError) as nothing_to_void:
        await stub.VoidPaymentBatch(pb.VoidPaymentBatchRequest())
    for raised in (empty, oversized, nothing_to_void):
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_capture_and_void_batches_answer_each_order(stub: Stub) -> None:
    await stub.AuthorizePaymentBatch(
        pb.AuthorizePaymentBatchRequest(requests=[_authorize(o) for o in ("o1", "o2", "o3")])
    )
    captured = await stub.CapturePaymentBatch(
        pb.CapturePaymentBatchRequest(
            requests=[pb.CapturePaymentRequest(order_id=o) for o in ("o1", "o2", "nope", "o1")]
        )
    )
    first, second, unknown, again = captured.results
    assert {first.payment.state, second.payment.state} == {pb.PAYMENT_STATE_CAPTURED}
    assert _failure(unknown).code == grpc.StatusCode.NOT_FOUND
    assert again == first

    voided = await stub.VoidPaymentBatch(
        pb.VoidPaymentBatchRequest(
            requests=[pb.VoidPaymentRequest(order_id=o) for o in ("o3", "o1", "ghost")]
        )
    )
    held, captured_before, ghost = voided.results
    assert held.payment.state == pb.PAYMENT_STATE_VOIDED
    assert _reason(captured_before) == "ILLEGAL_PAYMENT_TRANSITION"
    assert ghost.status.code == grpc.StatusCode.OK.value[0]
    assert not ghost.HasField("payment")  # no payment: a tombstone

    late = await stub.AuthorizePaymentBatch(
        pb.AuthorizePaymentBatchRequest(requests=[_authorize("ghost")])
    )
    assert _reason(late.results[0]) == "PAYMENT_VOIDED"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AuthorizePayment(_authorize("ghost"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# -- on the use cases, with a provider that is watched ---------------------------------


class WatchedProvider:
    """The simulated provider, counting its authorizations per key and the most calls
    it had in flight at once."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self._simulated = SimulatedProvider(latency_s)
        self.authorized: Counter[str] = Counter()
        self.voided: Counter[str] = Counter()
        self.asked: asyncio.Queue[str] = asyncio.Queue()  # the keys of authorizations begun
        self.answer_authorizations = asyncio.Event()
        self.answer_authorizations.set()
        self.held: set[str] = set()  # keys whose calls wait for let_go, every one else's not
        self.let_go = asyncio.Event()
        self.captured: Counter[str] = Counter()
        self.in_flight = 0
        self.most_in_flight = 0

    @asynccontextmanager
    async def _watched(self) -> AsyncIterator[None]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1

    async def authorize(
        self, key: str, amount_minor: int, currency: str, token: str
    ) -> Authorization:
        self.authorized[key] += 1
        self.asked.put_nowait(key)
        async with self._watched():
            await self.answer_authorizations.wait()
            await self._held(key)
            return await self._simulated.authorize(key, amount_minor, currency, token)

    async def capture(self, key: str, reference: str, amount_minor: int) -> None:
        self.captured[key] += 1
        async with self._watched():
            await self._held(key)
            await self._simulated.capture(key, reference, amount_minor)

    async def _held(self, key: str) -> None:
        if key in self.held:
            await self.let_go.wait()

    async def void(self, key: str, reference: str) -> None:
        self.voided[key] += 1
        async with self._watched():
            await self._simulated.void(key, reference)

    async def refund(self, key: str, reference: str, amount_minor: int) -> None:
        async with self._watched():
            await self._simulated.refund(key, reference, amount_minor)


@asynccontextmanager
async def migrated(url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head("ordermesh_payment:migrations", url, "payment")
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(any_database: str) -> AsyncIterator[AsyncEngine]:
    async with migrated(any_database) as engine:
        yield engine


def payments_on(
    engine: AsyncEngine,
    provider: WatchedProvider,
    psp_concurrency: int = 64,
    psp_timeout_s: float = 0.2,
    batch_wait_s: float | None = None,
) -> Payments:
    breaker = CircuitBreaker(1000, 5.0)
    resilient = ResilientProvider(provider, breaker, timeout_s=psp_timeout_s, attempts=2)
    return Payments(Transactions(engine), resilient, psp_concurrency, batch_wait_s=batch_wait_s)


def payments_waiting_briefly(engine: AsyncEngine) -> tuple[WatchedProvider, Payments]:
    """A watched provider whose calls may take long, and payments whose batches wait
    for them 0.2 s at most."""
    provider = WatchedProvider()
    return provider, payments_on(engine, provider, psp_timeout_s=30, batch_wait_s=0.2)


async def state_once_recorded(payments: Payments, order_id: str, old: PaymentState) -> PaymentState:
    """The payment's state once it has left ``old`` (a bounded wait)."""
    for _ in range(200):
        state = (await payments.get(order_id)).state
        if state is not old:
            return state
        await asyncio.sleep(0.025)
    return old


def asks(*order_ids: str, token: str = "tok_ok", amount: int = 1250) -> list[AuthorizationRequest]:
    return [AuthorizationRequest(o, "c1", amount, "EUR", token) for o in order_ids]


def payments_of(answers: list[Any]) -> list[Payment]:
    assert all(isinstance(a, Payment) for a in answers), answers
    return answers


def _identity(p: Payment) -> tuple[str, str, PaymentState, str]:
    # SQLite hands back naive datetimes: compare what a payment is, not its clock.
    return (p.payment_id, p.order_id, p.state, p.psp_reference)


async def events_in_outbox(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(outbox)) or 0)


async def test_a_retried_batch_never_authorizes_twice(engine: AsyncEngine) -> None:
    provider = WatchedProvider()
    payments = payments_on(engine, provider)
    orders = [f"o{i}" for i in range(5)]

    first = payments_of(await payments.authorize_many(asks(*orders)))
    retried = payments_of(await payments.authorize_many(asks(*reversed(orders))))

    assert [_identity(p) for p in retried] == [_identity(p) for p in reversed(first)]
    assert {p.state for p in first} == {PaymentState.AUTHORIZED}
    assert provider.authorized == Counter(orders)
    assert await events_in_outbox(engine) == len(orders)


async def test_an_unfinished_authorization_is_asked_again_with_its_key(
    engine: AsyncEngine,
) -> None:
    provider = WatchedProvider()
    payments = payments_on(engine, provider)
    [unanswered] = await payments.authorize_many(asks("o1", token="tok_timeout"), budget_s=1)
    pending = await payments.get("o1")
    [answered] = payments_of(await payments.authorize_many(asks("o1")))

    assert isinstance(unanswered, Unavailable)
    assert pending.state is PaymentState.AUTHORIZING
    assert (answered.payment_id, answered.state) == (pending.payment_id, PaymentState.AUTHORIZED)
    assert set(provider.authorized) == {"o1"}


async def test_a_card_the_provider_is_slow_on_holds_up_neither_its_batch_nor_the_next(
    engine: AsyncEngine,
) -> None:
    provider, payments = payments_waiting_briefly(engine)
    provider.held.add("slow")

    slow, *beside = await payments.authorize_many(asks("slow", "o1", "o2"), budget_s=30)
    # A retry while its call is still out: answered at once, the provider not asked again.
    retried, after = await payments.authorize_many(asks("slow", "o3"), budget_s=30)
    provider.let_go.set()
    landed = await state_once_recorded(payments, "slow", PaymentState.AUTHORIZING)
    [answered] = payments_of(await payments.authorize_many(asks("slow")))

    assert isinstance(slow, Unavailable)
    assert isinstance(retried, Unavailable)
    assert [p.state for p in payments_of([*beside, after])] == [PaymentState.AUTHORIZED] * 3
    assert landed is PaymentState.AUTHORIZED  # recorded as it came, nobody asking
    assert answered.state is PaymentState.AUTHORIZED
    assert provider.authorized == Counter(["slow", "o1", "o2", "o3"])
    assert await events_in_outbox(engine) == 4


async def test_a_capture_the_provider_is_slow_to_make_is_recorded_when_it_comes(
    engine: AsyncEngine,
) -> None:
    provider, payments = payments_waiting_briefly(engine)
    payments_of(await payments.authorize_many(asks("slow", "o1")))
    provider.held.add("slow")

    slow, beside = await payments.capture_many(["slow", "o1"], budget_s=30)
    [retried] = await payments.capture_many(["slow"], budget_s=30)
    provider.let_go.set()
    landed = await state_once_recorded(payments, "slow", PaymentState.AUTHORIZED)

    assert isinstance(slow, Unavailable)
    assert isinstance(retried, Unavailable)
    assert isinstance(beside, Payment)
    assert beside.state is PaymentState.CAPTURED
    assert landed is PaymentState.CAPTURED
    assert provider.captured == Counter(["slow", "o1"])


async def test_closing_stops_the_calls_still_out_and_a_retry_asks_again(
    engine: AsyncEngine,
) -> None:
    provider, payments = payments_waiting_briefly(engine)
    provider.held.add("slow")
    [slow] = await payments.authorize_many(asks("slow"), budget_s=30)
    await payments.close()
    left = (await payments.get("slow")).state
    provider.held.clear()
    [answered] = payments_of(await payments_on(engine, provider).authorize_many(asks("slow")))

    assert isinstance(slow, Unavailable)
    assert left is PaymentState.AUTHORIZING
    assert answered.state is PaymentState.AUTHORIZED
    assert provider.authorized["slow"] == 2  # the same key: the provider applies it once


async def test_an_authorization_landing_after_its_void_is_released(engine: AsyncEngine) -> None:
    provider = WatchedProvider()
    payments = payments_on(engine, provider, psp_timeout_s=10)
    provider.answer_authorizations.clear()
    authorizing = asyncio.create_task(payments.authorize_many(asks("o1", "o2"), budget_s=30))
    assert {await provider.asked.get(), await provider.asked.get()} == {"o1", "o2"}
    [voided] = await payments.void_many(["o1"])
    provider.answer_authorizations.set()
    late, unaffected = await authorizing

    assert isinstance(voided, Payment)
    assert voided.state is PaymentState.VOIDED
    assert isinstance(late, FailedPrecondition)
    assert late.reason_name == "PAYMENT_VOIDED"
    assert isinstance(unaffected, Payment)
    assert unaffected.state is PaymentState.AUTHORIZED
    assert provider.voided == Counter({"o1": 2})  # the void, then the late hold released
    assert (await payments.get("o1")).state is PaymentState.VOIDED


async def test_an_order_twice_in_one_batch_is_authorized_once(engine: AsyncEngine) -> None:
    provider = WatchedProvider()
    payments = payments_on(engine, provider)
    once, twice, other_amount = await payments.authorize_many(
        [*asks("o1", "o1"), *asks("o1", amount=99)]
    )

    assert isinstance(once, Payment)
    assert once == twice
    assert isinstance(other_amount, Conflict)
    assert other_amount.reason_name == "PAYMENT_MISMATCH"
    assert provider.authorized == Counter({"o1": 1})


async def test_void_many_tombstones_orders_without_a_payment(engine: AsyncEngine) -> None:
    payments = payments_on(engine, WatchedProvider())
    await payments.authorize_many(asks("held"))
    held, never, invalid = await payments.void_many(["held", "never", ""])

    assert isinstance(held, Payment)
    assert held.state is PaymentState.VOIDED
    assert never is None
    assert isinstance(invalid, ServiceError)
    [late] = await payments.authorize_many(asks("never"))
    assert isinstance(late, FailedPrecondition)
    assert late.reason_name == "PAYMENT_VOIDED"


async def test_the_provider_calls_of_a_batch_overlap_within_the_bound(
    engine: AsyncEngine,
) -> None:
    provider = WatchedProvider(latency_s=0.2)
    payments = payments_on(engine, provider, psp_concurrency=8, psp_timeout_s=10)
    orders = [f"o{i}" for i in range(20)]

    authorized = payments_of(await payments.authorize_many(asks(*orders), budget_s=30))

    assert {p.state for p in authorized} == {PaymentState.AUTHORIZED}
    assert 1 < provider.most_in_flight <= 8


async def test_a_batch_cancelled_while_its_provider_calls_wait_leaves_none_made_and_unrun(
    engine: AsyncEngine,
) -> None:
    """A batch whose caller went away while its calls waited for a provider slot: the
    waiting calls were never made, so none is left unawaited (Python warns of each)."""
    provider = WatchedProvider()
    provider.answer_authorizations.clear()  # the first call holds the one slot
    payments = payments_on(engine, provider, psp_concurrency=1, psp_timeout_s=10)
    batch = asyncio.create_task(payments.authorize_many(asks("w1", "w2", "w3"), budget_s=30))
    await asyncio.wait_for(provider.asked.get(), 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch.cancel()
        await asyncio.gather(batch, return_exceptions=True)
        gc.collect()
    assert [w for w in caught if "never awaited" in str(w.message)] == []
    assert sum(provider.authorized.values()) == 1


async def _statements_of_batches(payments: Payments, engine: AsyncEngine, size: int) -> list[int]:
    """Statements run by each kind of batch of ``size`` orders."""
    orders = [f"s{size}-{i}" for i in range(size)]
    half = size // 2
    counts = []
    with statements(engine) as seen:
        assert len(payments_of(await payments.authorize_many(asks(*orders)))) == size
    counts.append(len(seen))
    with statements(engine) as seen:
        payments_of(await payments.authorize_many(asks(*orders)))  # all replays
    counts.append(len(seen))
    with statements(engine) as seen:
        captured = payments_of(await payments.capture_many(orders[:half]))
    counts.append(len(seen))
    with statements(engine) as seen:
        voided = await payments.void_many(
            orders[half:] + [f"ghost-{size}-{i}" for i in range(half)]
        )
    counts.append(len(seen))
    assert {p.state for p in captured} == {PaymentState.CAPTURED}
    assert voided[half:] == [None] * half
    assert {p.state for p in payments_of(voided[:half])} == {PaymentState.VOIDED}
    return counts


async def test_statements_per_batch_do_not_grow_with_its_size(pg_database: str) -> None:
    async with migrated(pg_database) as engine:
        payments = payments_on(engine, WatchedProvider())
        await payments.authorize_many(asks("warm-up"))  # the first connection's own queries
        small = await _statements_of_batches(payments, engine, 4)
        large = await _statements_of_batches(payments, engine, 40)
    assert all(n > 0 for n in small)
    assert small == large
