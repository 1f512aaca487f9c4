"""Payment use cases. The provider is never called inside a database transaction: the
intent is committed first (AUTHORIZING), the provider called, the outcome committed with
its event. The order id is the idempotency key all the way to the provider.

Every operation works on a batch: one transaction for the intents, the provider calls
side by side (bounded), one transaction for the outcomes. A single call is a batch of
one. Each item gets its own answer, a payment or the error its single call raises.

A batch waits for its provider calls for a bounded time (``batch_wait_s``): one card
the provider is slow to answer must not hold its neighbours' answers, nor, with one
batch in flight per hop, every order queued behind them. A call still out then answers
its order UNAVAILABLE (the caller retries) and goes on; its outcome is recorded when it
comes, and until then a retry of that order is answered UNAVAILABLE at once rather than
asked of the provider again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_messaging.unit_of_work import UnitsOfWork
from ordermesh_payment.domain import (
    RISK_DECLINED,
    AuthorizationRequest,
    Payment,
    PaymentState,
    RiskSignals,
    events_of,
)
from ordermesh_payment.psp import PspDeclined, PspRefused, ResilientProvider
from ordermesh_payment.risk.events import Attempt, Item, PaymentOutcome
from ordermesh_payment.risk.scoring import RiskDecision, RiskScorer
from ordermesh_payment.store import PaymentStore, outbox
from ordermesh_platform.db import Transactions
from ordermesh_platform.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)
from ordermesh_platform.resilience import Transient
from ordermesh_platform.still_out import CallsStillOut, answered_within
from ordermesh_platform.validation import validate_order_id

T = TypeVar("T")
A = TypeVar("A")
Move = tuple[Payment, Payment]  # a payment before and after one change
# One move at the provider: None when made, else the error the caller sees.
ProviderMove = Callable[[Payment, float | None], Awaitable[ServiceError | None]]
# What a call that came back after its batch stopped waiting is recorded with.
Late = Callable[[int, T], Awaitable[None]]
STILL_OUT = "the payment provider has not answered this order yet; retry"


def _deadline(budget_s: float | None) -> float | None:
    return None if budget_s is None else time.monotonic() + budget_s


def _raised(answer: A | ServiceError) -> A:
    if isinstance(answer, ServiceError):
        raise answer
    return answer


def _invalid(check: Callable[[T], None], item: T) -> InvalidArgument | None:
    try:
        check(item)
    except InvalidArgument as error:
        return error
    return None


def _validated_order_ids(order_ids: Sequence[str]) -> tuple[dict[int, ServiceError], list[str]]:
    """The invalid items by position, and the valid order ids, each once, in order."""
    invalid: dict[int, ServiceError] = {}
    for i, order_id in enumerate(order_ids):
        if (error := _invalid(validate_order_id, order_id)) is not None:
            invalid[i] = error
    valid = (order_id for i, order_id in enumerate(order_ids) if i not in invalid)
    return invalid, list(dict.fromkeys(valid))


def _in_request_order(
    order_ids: Sequence[str], invalid: Mapping[int, ServiceError], outcomes: Mapping[str, A]
) -> list[A | ServiceError]:
    return [invalid[i] if i in invalid else outcomes[o] for i, o in enumerate(order_ids)]


def _intent(request: AuthorizationRequest, now: datetime) -> Payment:
    return Payment(
        str(uuid.uuid4()), request.order_id, request.customer_id, PaymentState.AUTHORIZING,
        request.amount_minor, request.currency, "", "", now, now,
    )  # fmt: skip


def _attempt(request: AuthorizationRequest, at_ms: int) -> Attempt:
    """What risk scoring knows of an authorization: a signal not sent scores as never
    seen, and no items as an empty order."""
    s = request.signals or RiskSignals()
    created = s.account_created_ms if s.account_created_ms is not None else at_ms
    items = tuple(Item(i.sku, i.quantity, i.unit_price_minor) for i in request.items)
    return Attempt(
        request.order_id, at_ms, request.customer_id, request.token, s.device_id,
        s.client_ip, request.amount_minor, request.currency, items, s.billing_country,
        s.shipping_country, s.email_domain, created,
    )  # fmt: skip


async def _nothing_to_record(i: int, answer: object) -> None:
    """A release of a hold needs no record: the payment is voided already."""


def _tombstone(order_id: str, now: datetime) -> Payment:
    return Payment(str(uuid.uuid4()), order_id, "", PaymentState.VOIDED, 0, "XXX", "", "", now, now)


def _replayed(request: AuthorizationRequest, existing: Payment) -> Payment | ServiceError:
    """An order authorized before answers as it did; a different request is refused."""
    try:
        existing.refuse_if_finished_without_money()
        existing.check_same_request(request.amount_minor, request.currency)
    except (FailedPrecondition, Conflict) as error:
        return error
    return existing


def _answer_to(
    request: AuthorizationRequest, outcome: Payment | ServiceError
) -> Payment | ServiceError:
    """The order's outcome as this request's single call would have seen it."""
    if isinstance(outcome, ServiceError):
        return outcome
    return _replayed(request, outcome)


def _finished(payment: Payment) -> Payment | ServiceError:
    try:
        payment.refuse_if_finished_without_money()
    except FailedPrecondition as error:
        return error
    return payment


def _settled(outcome: Payment, wanted: Payment) -> Payment | ServiceError:
    """Another call moved the payment between our read and our write: the move we made
    at the provider is now judged against what it became."""
    if outcome.state is not wanted.state:
        try:
            outcome.moved_to(wanted.state)
        except FailedPrecondition as error:
            return error
    return outcome


def _moves_wanted(
    order_ids: Sequence[str],
    current: Mapping[str, Payment],
    target_of: Callable[[Payment], Payment],
) -> tuple[dict[str, Payment | ServiceError], list[Move]]:
    """The answers of orders needing no move (missing, refused, there already), and
    the moves the others need."""
    outcomes: dict[str, Payment | ServiceError] = {}
    wanted: list[Move] = []
    for order_id in order_ids:
        payment = current.get(order_id)
        if payment is None:
            outcomes[order_id] = NotFound("payment", order_id)
            continue
        try:
            target = target_of(payment)
        except FailedPrecondition as error:
            outcomes[order_id] = error
            continue
        if target is payment:
            outcomes[order_id] = payment  # there already: a retry
        else:
            wanted.append((payment, target))
    return outcomes, wanted


def _to_captured(p: Payment) -> Payment:
    return p.moved_to(PaymentState.CAPTURED)


def _to_voided(p: Payment) -> Payment:
    if p.state is PaymentState.DECLINED:
        return p  # nothing is held
    return p.moved_to(PaymentState.VOIDED)


def _to_refunded(p: Payment) -> Payment:
    return p.moved_to(PaymentState.REFUNDED)


class Payments:
    def __init__(
        self,
        sessions: Transactions,
        provider: ResilientProvider,
        psp_concurrency: int = 64,
        risk: RiskScorer | None = None,
        batch_wait_s: float | None = None,
    ) -> None:
        self._work = UnitsOfWork(sessions, outbox)
        self._provider = provider
        self._risk = risk  # None: risk scoring off, no risk work on the path
        # Shared by every call of this service: a big batch cannot flood the provider.
        self._provider_slots = asyncio.Semaphore(psp_concurrency)
        self._batch_wait_s = batch_wait_s  # None: a batch waits for all its calls
        # Provider calls their batch stopped waiting for, by (operation, order id).
        self._out: CallsStillOut[tuple[str, str]] = CallsStillOut("provider call")

    async def close(self) -> None:
        """Stop the calls still out: their orders stay as they are (an authorization
        AUTHORIZING), and a retry asks the provider again with the same key."""
        await self._out.close()

    async def get(self, order_id: str) -> Payment:
        validate_order_id(order_id)
        async with self._work.read() as session:
            found = await PaymentStore(session).get(order_id)
        if found is None:
            raise NotFound("payment", order_id)
        return found

    # -- single calls: a batch of one ------------------------------------------------

    async def authorize(
        self,
        order_id: str,
        customer_id: str,
        amount_minor: int,
        currency: str,
        token: str,
        budget_s: float | None = None,
    ) -> Payment:
        request = AuthorizationRequest(order_id, customer_id, amount_minor, currency, token)
        [answer] = await self.authorize_many([request], budget_s)
        return _raised(answer)

    async def capture(self, order_id: str, budget_s: float | None = None) -> Payment:
        [answer] = await self.capture_many([order_id], budget_s)
        return _raised(answer)

    async def void(self, order_id: str, budget_s: float | None = None) -> Payment | None:
        """Release an authorization. Voiding an order without a payment records a
        tombstone, so an authorization still in flight cannot land afterwards."""
        [answer] = await self.void_many([order_id], budget_s)
        return _raised(answer)

    async def refund(self, order_id: str, budget_s: float | None = None) -> Payment:
        current = await self.get(order_id)
        outcomes = await self._move_at_provider(
            "refund",
            [order_id],
            {order_id: current},
            _to_refunded,
            self._refund_at_provider,
            _deadline(budget_s),
        )
        return _raised(outcomes[order_id])

    # -- batches -----------------------------------------------------------------------

    async def authorize_many(
        self, requests: Sequence[AuthorizationRequest], budget_s: float | None = None
    ) -> list[Payment | ServiceError]:
        """One answer per request, in order. A retry never authorizes twice; an order
        asked for twice in one batch is authorized once and both answers alike."""
        deadline = _deadline(budget_s)
        invalid: dict[int, ServiceError] = {}
        for i, request in enumerate(requests):
            if (error := _invalid(AuthorizationRequest.validate, request)) is not None:
                invalid[i] = error
        first_asks: dict[str, AuthorizationRequest] = {}
        for i, request in enumerate(requests):
            if i not in invalid:
                first_asks.setdefault(request.order_id, request)
        outcomes = await self._authorize_orders(list(first_asks.values()), deadline)
        return [
            invalid[i] if i in invalid else _answer_to(request, outcomes[request.order_id])
            for i, request in enumerate(requests)
        ]

    async def capture_many(
        self, order_ids: Sequence[str], budget_s: float | None = None
    ) -> list[Payment | ServiceError]:
        deadline = _deadline(budget_s)
        invalid, distinct = _validated_order_ids(order_ids)
        async with self._work.read() as session:
            current = await PaymentStore(session).get_many(distinct)
        outcomes = await self._move_at_provider(
            "capture", distinct, current, _to_captured, self._capture_at_provider, deadline
        )
        return _in_request_order(order_ids, invalid, outcomes)

    async def void_many(
        self, order_ids: Sequence[str], budget_s: float | None = None
    ) -> list[Payment | ServiceError | None]:
        """An order without a payment answers None and gets a tombstone (see void)."""
        deadline = _deadline(budget_s)
        invalid, distinct = _validated_order_ids(order_ids)
        now = datetime.now(UTC)
        async with self._work.begin() as work:
            store = PaymentStore(work.connection)
            tombstoned = await store.claim_many([_tombstone(o, now) for o in distinct])
            held = [o for o in distinct if o not in tombstoned]
            current = await store.get_many(held)
        outcomes: dict[str, Payment | ServiceError | None] = dict.fromkeys(tombstoned)
        outcomes.update(
            await self._move_at_provider(
                "void", held, current, _to_voided, self._void_at_provider, deadline
            )
        )
        return _in_request_order(order_ids, invalid, outcomes)

    # -- the steps -------------------------------------------------------------------

    async def _authorize_orders(
        self, requests: Sequence[AuthorizationRequest], deadline: float | None
    ) -> dict[str, Payment | ServiceError]:
        """Authorize each order (each once, in ``requests``): its payment or error."""
        attempts: dict[str, Attempt] = {}
        vectors: dict[str, list[float]] | None = {}
        if self._risk is None:
            outcomes, to_ask = await self._record_intents(requests)
        else:
            # The features are read while the intents are recorded, on another
            # connection: the batch waits for one round trip, not two.
            at_ms = int(time.time() * 1000)
            attempts = {request.order_id: _attempt(request, at_ms) for request in requests}
            (outcomes, to_ask), read = await asyncio.gather(
                self._record_intents(requests),
                self._risk.vectors_for(list(attempts.values())),
            )
            vectors = None if read is None else dict(zip(attempts, read, strict=True))
        # Still out from an earlier batch: neither scored again nor asked twice.
        for _, intent in to_ask:
            if self._still_out("authorize", intent.order_id):
                outcomes[intent.order_id] = Unavailable(STILL_OUT)
        to_ask = [(r, intent) for r, intent in to_ask if intent.order_id not in outcomes]
        moves: list[Move] = []
        scored: dict[str, Attempt] = {}
        decisions: dict[str, RiskDecision] = {}
        if self._risk is not None and to_ask:
            to_ask, moves, scored, decisions = await self._screen(
                self._risk, to_ask, attempts, vectors
            )

        async def late(i: int, answer: Payment | ServiceError) -> None:
            if isinstance(answer, Payment):
                # Its batch's deadline may be gone: a release it needs has the
                # provider's own per-call limits.
                landed = [(to_ask[i][1], answer)]
                await self._record_authorizations(landed, scored, decisions, None)

        asked = await self._ask(
            "authorize",
            [
                (intent.order_id, partial(self._ask_to_authorize, request, intent, deadline))
                for request, intent in to_ask
            ],
            late,
        )
        for (_, intent), answer in zip(to_ask, asked, strict=True):
            if isinstance(answer, ServiceError):
                outcomes[intent.order_id] = answer
            else:
                moves.append((intent, answer))
        outcomes.update(await self._record_authorizations(moves, scored, decisions, deadline))
        return outcomes

    async def _record_authorizations(
        self,
        moves: Sequence[Move],
        scored: Mapping[str, Attempt],
        decisions: Mapping[str, RiskDecision],
        deadline: float | None,
    ) -> dict[str, Payment | ServiceError]:
        """Commit the provider's answers; an authorization that landed after its void is
        released at once. Each order's outcome."""
        recorded = await self._record(moves, scored, decisions)
        outcomes: dict[str, Payment | ServiceError] = {}
        outcomes.update(await self._release_late_authorizations(moves, recorded, deadline))
        for _, after in moves:
            outcomes.setdefault(after.order_id, _finished(recorded[after.order_id]))
        return outcomes

    async def _screen(
        self,
        risk: RiskScorer,
        to_ask: list[tuple[AuthorizationRequest, Payment]],
        attempts: Mapping[str, Attempt],
        vectors: Mapping[str, list[float]] | None,
    ) -> tuple[
        list[tuple[AuthorizationRequest, Payment]],
        list[Move],
        dict[str, Attempt],
        dict[str, RiskDecision],
    ]:
        """Score the batch at once: the intents still to ask the provider about, the
        moves of those declined by risk, and the attempts and decisions by order."""
        scored = {intent.order_id: attempts[intent.order_id] for _, intent in to_ask}
        decisions = await risk.decide(
            list(scored.values()),
            None if vectors is None else [vectors[order_id] for order_id in scored],
        )
        keep: list[tuple[AuthorizationRequest, Payment]] = []
        refused: list[Move] = []
        for (request, unscored), decision in zip(to_ask, decisions, strict=True):
            intent = replace(unscored, risk=decision.assessment())
            if decision.declined:
                refused.append(
                    (intent, intent.moved_to(PaymentState.DECLINED, decline_reason=RISK_DECLINED))
                )
            else:
                keep.append((request, intent))
        return keep, refused, scored, dict(zip(scored, decisions, strict=True))

    async def _record_intents(
        self, requests: Sequence[AuthorizationRequest]
    ) -> tuple[dict[str, Payment | ServiceError], list[tuple[AuthorizationRequest, Payment]]]:
        """Commit the intents of new orders; returns the answers of orders settled
        before, and the intents the provider must be asked about."""
        now = datetime.now(UTC)
        intents = [_intent(request, now) for request in requests]
        async with self._work.single() as work:  # one insert; the replays' read after it
            store = PaymentStore(work.connection)
            claimed = await store.claim_many(intents)
            replays = [p.order_id for p in intents if p.order_id not in claimed]
            existing = await store.get_many(replays)
        outcomes: dict[str, Payment | ServiceError] = {}
        to_ask: list[tuple[AuthorizationRequest, Payment]] = []
        for request, intent in zip(requests, intents, strict=True):
            if intent.order_id in claimed:
                to_ask.append((request, intent))
                continue
            replay = _replayed(request, existing[request.order_id])
            if isinstance(replay, Payment) and replay.state is PaymentState.AUTHORIZING:
                to_ask.append((request, replay))  # an earlier attempt did not finish: same key
            else:
                outcomes[request.order_id] = replay  # never a second authorization
        return outcomes, to_ask

    async def _ask_to_authorize(
        self, request: AuthorizationRequest, intent: Payment, deadline: float | None
    ) -> Payment | ServiceError:
        """The payment as the provider's answer leaves it, or UNAVAILABLE."""
        try:
            authorization = await self._provider.authorize(
                request.order_id, request.amount_minor, request.currency, request.token, deadline
            )
        except PspDeclined as decline:
            return intent.moved_to(PaymentState.DECLINED, decline_reason=decline.reason)
        except Transient as error:
            return Unavailable(f"payment provider unavailable: {error}")
        return intent.moved_to(PaymentState.AUTHORIZED, psp_reference=authorization.reference)

    async def _release_late_authorizations(
        self, moves: Sequence[Move], recorded: Mapping[str, Payment], deadline: float | None
    ) -> dict[str, ServiceError]:
        """Voided while the provider was answering: release the holds it just made.
        Returns the errors of releases that failed."""
        late = [
            after
            for _, after in moves
            if after.state is PaymentState.AUTHORIZED
            and recorded[after.order_id].state is PaymentState.VOIDED
        ]
        released = await self._ask(
            "void",
            [(p.order_id, partial(self._void_at_provider, p, deadline)) for p in late],
            _nothing_to_record,
        )
        return {p.order_id: e for p, e in zip(late, released, strict=True) if e is not None}

    async def _move_at_provider(
        self,
        op: str,
        order_ids: Sequence[str],
        current: Mapping[str, Payment],
        target_of: Callable[[Payment], Payment],
        call: ProviderMove,
        deadline: float | None,
    ) -> dict[str, Payment | ServiceError]:
        """Move each order's payment at the provider, then record the moves made."""
        outcomes, wanted = _moves_wanted(order_ids, current, target_of)

        async def late(i: int, refusal: ServiceError | None) -> None:
            if refusal is None:
                await self._record([wanted[i]])

        refusals = await self._ask(
            op, [(before.order_id, partial(call, before, deadline)) for before, _ in wanted], late
        )
        moves: list[Move] = []
        for move, refusal in zip(wanted, refusals, strict=True):
            if refusal is None:
                moves.append(move)
            else:
                outcomes[move[0].order_id] = refusal
        recorded = await self._record(moves)
        for _, after in moves:
            outcomes[after.order_id] = _settled(recorded[after.order_id], after)
        return outcomes

    async def _record(
        self,
        moves: Sequence[Move],
        scored: Mapping[str, Attempt] | None = None,
        decisions: Mapping[str, RiskDecision] | None = None,
    ) -> dict[str, Payment]:
        """Commit the moves with their events (carrying the attempts risk scored, by
        order id) and the risk decisions that led to them, in one statement; returns
        each payment as it now is (as another call left it, when that call moved it
        first)."""
        if not moves:
            return {}
        now = datetime.now(UTC)
        stamped = [(before, replace(after, updated_at=now)) for before, after in moves]
        logged = []
        if self._risk is not None and scored and decisions:
            outcomes = [
                PaymentOutcome(scored[after.order_id], after.state is PaymentState.DECLINED)
                for _, after in stamped
                if after.order_id in scored
            ]
            logged = self._risk.decision_writes(outcomes, decisions)
        async with self._work.single() as work:
            store = PaymentStore(work.connection)
            # One statement: the moves, then the events and the risk decisions of those
            # that applied.
            work.record(events_of([after for _, after in stamped], scored))
            rows = await work.write(store.move_writes(stamped), *logged, events_of_written=True)
            moved = {row.order_id for row in rows}
            others = await store.get_many(
                [before.order_id for before, _ in stamped if before.order_id not in moved]
            )
        return {
            after.order_id: after if after.order_id in moved else others[after.order_id]
            for _, after in stamped
        }

    async def _ask(
        self, op: str, calls: Sequence[tuple[str, Callable[[], Awaitable[T]]]], late: Late[T]
    ) -> list[T | Unavailable]:
        """Each order's provider call (``(order id, call)``), side by side, at most the
        service's provider concurrency at once; each is made only once it has its slot,
        so a batch cancelled while its calls wait (its caller gone) leaves no call made.
        The batch waits ``batch_wait_s`` at most: a call still out then answers its order
        UNAVAILABLE and goes on, and ``late(index, answer)`` records what it brings. An
        order whose call from an earlier batch is still out is not asked again."""
        answers: list[T | Unavailable] = [Unavailable(STILL_OUT)] * len(calls)
        asked: dict[asyncio.Future[T], int] = {}
        for i, (order_id, call) in enumerate(calls):
            if not self._still_out(op, order_id):
                asked[asyncio.ensure_future(self._in_slot(call))] = i
        if not asked:
            return answers
        done, pending = await answered_within(asked, self._batch_wait_s)
        for future in done:
            answers[asked[future]] = future.result()
        for future in pending:
            i = asked[future]
            self._out.record_when_answered((op, calls[i][0]), future, partial(late, i))
        return answers

    def _still_out(self, op: str, order_id: str) -> bool:
        """Whether the order's call from an earlier batch is still out at the provider."""
        return (op, order_id) in self._out

    async def _in_slot(self, call: Callable[[], Awaitable[T]]) -> T:
        async with self._provider_slots:
            return await call()

    async def _capture_at_provider(self, p: Payment, deadline: float | None) -> ServiceError | None:
        return await self._provider_error(
            self._provider.capture(p.order_id, p.psp_reference, p.amount_minor, deadline)
        )

    async def _void_at_provider(self, p: Payment, deadline: float | None) -> ServiceError | None:
        return await self._provider_error(
            self._provider.void(p.order_id, p.psp_reference, deadline)
        )

    async def _refund_at_provider(self, p: Payment, deadline: float | None) -> ServiceError | None:
        return await self._provider_error(
            self._provider.refund(p.order_id, p.psp_reference, p.amount_minor, deadline)
        )

    @staticmethod
    async def _provider_error(call: Awaitable[None]) -> ServiceError | None:
        """None when the provider did it; otherwise the error the caller sees."""
        try:
            await call
        except Transient as error:
            return Unavailable(f"payment provider unavailable: {error}")
        except PspRefused as error:
            return FailedPrecondition(ErrorReason.PSP_REFUSED, str(error))
        return None
