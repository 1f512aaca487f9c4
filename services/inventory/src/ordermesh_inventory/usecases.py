"""Inventory use cases: each one transaction over the store, rules from the domain."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ordermesh_inventory.domain import (
    MAX_SKUS_PER_CALL,
    Adjustment,
    Product,
    Reservation,
    ReservationLine,
    ReservationRequest,
    ReservationState,
    StockLevel,
    committed_event,
    priced_lines,
    released_event,
    reserved_event,
    take_all,
    validate_adjustment,
    validate_product,
    validate_reservation_request,
    validate_sku_list,
)
from ordermesh_inventory.store import (
    COMMIT,
    RELEASE_COMMITTED,
    RELEASE_RESERVED,
    InventoryStore,
    outbox,
)
from ordermesh_messaging.unit_of_work import UnitOfWork, UnitsOfWork
from ordermesh_platform.db import Transactions
from ordermesh_platform.errors import InvalidArgument, NotFound, ServiceError, Unavailable
from ordermesh_platform.faults import kill_at
from ordermesh_platform.telemetry import untraced
from ordermesh_platform.validation import validate_order_id

# Reservations one sweep releases at most: one transaction, its locks held briefly. A
# sweep that found this many is followed by the next at once (``sweep_behind``).
EXPIRED_PER_SWEEP = 100


class Inventory:
    def __init__(
        self, sessions: Transactions, default_ttl_s: float = 900.0, fault_point: str = ""
    ) -> None:
        self._work = UnitsOfWork(sessions, outbox)
        self._default_ttl_s = default_ttl_s
        self._fault_point = fault_point

    async def upsert_product(self, product: Product) -> Product:
        validate_product(product)
        async with self._work.begin() as work:
            await InventoryStore(work.connection).upsert_product(product)
        return product

    async def list_products(self, skus: list[str]) -> list[Product]:
        validate_sku_list(skus, "skus", required=False)
        async with self._work.read() as session:
            return await InventoryStore(session).list_products(skus, MAX_SKUS_PER_CALL)

    async def get_stock(self, skus: list[str]) -> list[StockLevel]:
        validate_sku_list(skus, "skus", required=True)
        async with self._work.read() as session:
            return await InventoryStore(session).get_stock(skus)

    async def adjust_stock(self, adjustment: Adjustment) -> StockLevel:
        validate_adjustment(adjustment)
        async with self._work.begin() as work:
            store = InventoryStore(work.connection)
            # Lock the SKU first: concurrent adjustments of one SKU queue here.
            level = await store.lock_stock(adjustment.sku)
            if not await store.record_adjustment(adjustment):
                return level
            level = level.adjusted(adjustment.delta)
            await store.save_stock(level)
            return level

    async def reserve(
        self, order_id: str, lines: list[ReservationLine], currency: str, ttl_s: float
    ) -> Reservation:
        """All lines or none; idempotent by order id."""
        request = ReservationRequest(order_id, tuple(lines), currency, ttl_s)
        return _only(await self.reserve_many([request]))

    async def commit(self, order_id: str) -> Reservation:
        return _only(await self.commit_many([order_id]))

    async def release(
        self, order_id: str, reason: str = "RELEASED", expired_only: bool = False
    ) -> Reservation | None:
        """Give the units back. Releasing an order that never reserved leaves a
        tombstone, so a reservation still in flight cannot land afterwards."""
        return _only(await self._release_batch([order_id], reason, expired_only))

    async def reserve_many(
        self, requests: Sequence[ReservationRequest]
    ) -> list[Reservation | ServiceError]:
        """Each order all lines or none, idempotent by order id, decided in arrival
        order in one transaction: one answer per request, in request order."""
        answers: dict[int, Reservation | ServiceError] = {}
        wanted: dict[int, tuple[ReservationLine, ...]] = {}
        for i, r in enumerate(requests):
            try:
                wanted[i] = validate_reservation_request(r.order_id, r.lines, r.currency, r.ttl_s)
            except InvalidArgument as error:
                answers[i] = error
        if wanted:
            answers |= await self._reserve_decided(requests, wanted)
            kill_at(self._fault_point, "after_reserve_commit")  # committed, not yet answered
        return [answers[i] for i in range(len(requests))]

    async def _reserve_decided(
        self,
        requests: Sequence[ReservationRequest],
        wanted: dict[int, tuple[ReservationLine, ...]],
    ) -> dict[int, Reservation | ServiceError]:
        """Decide and write the batch in one transaction. The first attempt takes every
        order for new (almost all are) and writes it in one statement; an order that
        had a reservation already (a retry, refused or not), or got one from a
        concurrent call, rolls the batch back, and the next attempt reads the orders'
        reservations first and answers those as the first call was answered."""
        for attempt in range(RESERVE_ATTEMPTS):
            try:
                async with self._work.begin() as work:
                    return await self._reserve_valid(work, requests, wanted, look_up=attempt > 0)
            except _ReservedMeanwhile:
                continue
        raise Unavailable("concurrent calls kept reserving the same orders; try again")

    async def _reserve_valid(
        self,
        work: UnitOfWork,
        requests: Sequence[ReservationRequest],
        wanted: dict[int, tuple[ReservationLine, ...]],
        look_up: bool,
    ) -> dict[int, Reservation | ServiceError]:
        store = InventoryStore(work.connection)
        known = {}
        if look_up:
            known = await store.get_reservations(sorted({requests[i].order_id for i in wanted}))
        skus = sorted(
            {x.sku for i in wanted if requests[i].order_id not in known for x in wanted[i]}
        )
        # Locked before any head is claimed: a batch waits on a head only holding all its
        # stock (a concurrent claimer of the same order waits on ours, or we on its).
        catalogue, levels = await store.lock_priced_stock(skus)
        available = {sku: level.available for sku, level in levels.items()}
        answers, winners = self._decide(requests, wanted, known, catalogue, available)
        if not look_up:
            # A refusal taken for new may be a retry, refused because its own
            # reservation holds the units: it must be answered as it was the first time.
            refused = {
                requests[i].order_id for i, a in answers.items() if isinstance(a, ServiceError)
            }
            if refused and await store.get_reservations(sorted(refused)):
                raise _ReservedMeanwhile
        won = list(winners.values())
        work.record(reserved_event(r) for r in won)
        claimed = {row.order_id for row in await work.write(*store.reservation_writes(won))}
        if claimed != set(winners):
            raise _ReservedMeanwhile  # rolls the whole batch back, its stock moves too
        return answers

    def _decide(
        self,
        requests: Sequence[ReservationRequest],
        wanted: dict[int, tuple[ReservationLine, ...]],
        known: dict[str, Reservation],
        catalogue: dict[str, Product],
        available: dict[str, int],
    ) -> tuple[dict[int, Reservation | ServiceError], dict[str, Reservation]]:
        """Answers by request index, and the new reservations by order id: in arrival
        order, each against what the orders before it left."""
        now = datetime.now(UTC)
        answers: dict[int, Reservation | ServiceError] = {}
        winners: dict[str, Reservation] = {}
        for i, lines in wanted.items():
            r = requests[i]
            earlier = known.get(r.order_id) or winners.get(r.order_id)
            if earlier is not None:
                answers[i] = _replayed(earlier, lines)
                continue
            try:
                priced = priced_lines(lines, catalogue, r.currency)
                take_all(available, priced)
            except ServiceError as error:
                answers[i] = error
                continue
            expires_at = now + timedelta(seconds=r.ttl_s or self._default_ttl_s)
            reservation = Reservation(
                r.order_id, ReservationState.RESERVED, priced, r.currency, expires_at, now
            )
            winners[r.order_id] = answers[i] = reservation
        return answers, winners

    async def commit_many(self, order_ids: Sequence[str]) -> list[Reservation | ServiceError]:
        """Commit each order's reserved units, in one transaction: one answer per
        order id, in order; committing again answers the committed reservation."""
        answers, valid = _validated_order_ids(order_ids)
        if valid:
            async with self._work.begin() as work:
                answers |= await self._commit_valid(work, order_ids, valid)
        return [answers[i] for i in range(len(order_ids))]

    async def _commit_valid(
        self, work: UnitOfWork, order_ids: Sequence[str], valid: list[int]
    ) -> dict[int, Reservation | ServiceError]:
        store = InventoryStore(work.connection)
        current = await store.get_reservations(sorted({order_ids[i] for i in valid}), lock=True)
        answers: dict[int, Reservation | ServiceError] = {}
        committed: dict[str, Reservation] = {}
        for i in valid:
            reservation = current.get(order_ids[i])
            if reservation is None:
                answers[i] = NotFound("reservation", order_ids[i])
            elif reservation.state is ReservationState.COMMITTED:
                answers[i] = reservation
            else:
                try:
                    reservation = reservation.committed()
                except ServiceError as error:
                    answers[i] = error
                    continue
                current[reservation.order_id] = committed[reservation.order_id] = reservation
                answers[i] = reservation
        await store.lock_stock_many(_skus_of(committed.values()))
        work.record(committed_event(r) for r in committed.values())
        await work.write(
            store.state_writes(committed, ReservationState.COMMITTED),
            store.move_writes((r.lines, COMMIT) for r in committed.values()),
        )
        return answers

    async def release_many(
        self, order_ids: Sequence[str], reason: str = "RELEASED"
    ) -> list[Reservation | ServiceError]:
        """Give each order's units back, in one transaction: one answer per order id,
        in order. An order that never reserved gets a tombstone (see ``release``)."""
        answers = await self._release_batch(order_ids, reason, expired_only=False)
        released = [a for a in answers if a is not None]
        assert len(released) == len(answers)  # only expired_only skips an order
        return released

    async def _release_batch(
        self, order_ids: Sequence[str], reason: str, expired_only: bool
    ) -> list[Reservation | ServiceError | None]:
        answers: dict[int, Reservation | ServiceError | None] = {}
        checked, valid = _validated_order_ids(order_ids)
        answers |= checked
        lost: set[str] = set()
        if valid:
            async with self._work.begin() as work:
                released, lost = await self._release_valid(
                    work, order_ids, valid, reason, expired_only
                )
                answers |= released
        again = [i for i in valid if order_ids[i] in lost]
        if again:
            # Their heads landed while we tombstoned them: release those reservations now.
            retried = await self._release_batch([order_ids[i] for i in again], reason, expired_only)
            answers |= dict(zip(again, retried, strict=True))
        return [answers[i] for i in range(len(order_ids))]

    async def _release_valid(
        self,
        work: UnitOfWork,
        order_ids: Sequence[str],
        valid: list[int],
        reason: str,
        expired_only: bool,
    ) -> tuple[dict[int, Reservation | ServiceError | None], set[str]]:
        """Answers by index, and the order ids whose tombstone lost to a new head."""
        store = InventoryStore(work.connection)
        current = await store.get_reservations(sorted({order_ids[i] for i in valid}), lock=True)
        now = datetime.now(UTC)
        answers: dict[int, Reservation | ServiceError | None] = {}
        tombstones: dict[str, Reservation] = {}
        released: dict[str, tuple[Reservation, tuple[str, str]]] = {}
        for i in valid:
            reservation = current.get(order_ids[i])
            if reservation is None:
                reservation = tombstones[order_ids[i]] = Reservation.tombstone(order_ids[i], now)
            elif reservation.state is not ReservationState.RELEASED:
                if expired_only and not (
                    reservation.state is ReservationState.RESERVED and reservation.expired(now)
                ):
                    answers[i] = None  # committed or renewed since the sweep listed it
                    continue
                moves = (
                    RELEASE_COMMITTED
                    if reservation.state is ReservationState.COMMITTED
                    else RELEASE_RESERVED
                )
                reservation = reservation.released()
                released[reservation.order_id] = (reservation, moves)
            current[reservation.order_id] = answers[i] = reservation
        await store.lock_stock_many(_skus_of(r for r, _ in released.values()))
        # Tombstones after the stock locks, as reserve claims its heads: no lock cycle.
        lost = set(tombstones) - await store.claim_reservations(tombstones.values())
        work.record(released_event(r, reason) for r, _ in released.values())
        await work.write(
            store.state_writes(released, ReservationState.RELEASED),
            store.move_writes((r.lines, columns) for r, columns in released.values()),
        )
        return answers, lost

    async def release_expired(self, limit: int = EXPIRED_PER_SWEEP) -> int:
        """One sweep: release reservations whose time to live has passed, at most
        ``limit``, in one transaction; how many. The look-up is untraced (most sweeps
        find nothing)."""
        with untraced():
            async with self._work.read() as session:
                order_ids = await InventoryStore(session).expired(datetime.now(UTC), limit)
        if order_ids:
            await self._release_batch(order_ids, "EXPIRED", expired_only=True)
        return len(order_ids)

    @staticmethod
    def sweep_behind(released: int) -> bool:
        """Whether a sweep released as many as one sweep takes: then the next goes at
        once, so a backlog (stock unsellable until released) is not 100 per interval."""
        return released >= EXPIRED_PER_SWEEP


T = TypeVar("T")
# Passes one reservation batch may take: the first without reading reservations, then
# with; a third only when a concurrent call reserved one of its orders in between.
RESERVE_ATTEMPTS = 3


class _ReservedMeanwhile(Exception):
    """An order of the batch had a reservation when its head was written."""


def _only(answers: Sequence[T | ServiceError]) -> T:
    """The one answer of a batch of one: its result, or its error raised."""
    (answer,) = answers
    if isinstance(answer, ServiceError):
        raise answer
    return answer


def _replayed(
    existing: Reservation, wanted: tuple[ReservationLine, ...]
) -> Reservation | ServiceError:
    try:
        return existing.replayed(wanted)
    except ServiceError as error:
        return error


def _skus_of(reservations: Iterable[Reservation]) -> list[str]:
    return sorted({x.sku for r in reservations for x in r.lines})


def _validated_order_ids(
    order_ids: Sequence[str],
) -> tuple[dict[int, Reservation | ServiceError], list[int]]:
    """The errors of the invalid order ids by index, and the indexes of the valid ones."""
    errors: dict[int, Reservation | ServiceError] = {}
    valid = []
    for i, order_id in enumerate(order_ids):
        try:
            validate_order_id(order_id)
            valid.append(i)
        except InvalidArgument as error:
            errors[i] = error
    return errors, valid
