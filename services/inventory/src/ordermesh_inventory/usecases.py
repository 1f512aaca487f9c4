"""Inventory use cases: each one transaction over the store, rules from the domain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_inventory.domain import (
    MAX_SKUS_PER_CALL,
    Adjustment,
    Product,
    Reservation,
    ReservationLine,
    ReservationState,
    StockLevel,
    out_of_stock,
    validate_adjustment,
    validate_order_id,
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
from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.outbox import Outbox
from ordermesh_platform.db import Transactions
from ordermesh_platform.errors import Conflict, FailedPrecondition, NotFound, Validator
from ordermesh_platform.telemetry import untraced


def _event_lines(r: Reservation) -> list[events_pb2.EventLine]:
    return [
        events_pb2.EventLine(
            sku=x.sku,
            quantity=x.quantity,
            unit_price=money_pb2.Money(amount_minor=x.unit_price_minor, currency=r.currency),
        )
        for x in r.lines
    ]


def _event(r: Reservation, payload: object) -> DomainEvent:
    return DomainEvent("reservation", r.order_id, payload)  # type: ignore[arg-type]


class Inventory:
    def __init__(self, sessions: Transactions, default_ttl_s: float = 900.0) -> None:
        self._sessions = sessions
        self._default_ttl_s = default_ttl_s
        self._outbox = Outbox(outbox)

    async def upsert_product(self, product: Product) -> Product:
        validate_product(product)
        async with self._sessions.begin() as session:
            await InventoryStore(session).upsert_product(product)
        return product

    async def list_products(self, skus: list[str]) -> list[Product]:
        validate_sku_list(skus, "skus", required=False)
        async with self._sessions() as session:
            return await InventoryStore(session).list_products(skus, MAX_SKUS_PER_CALL)

    async def get_stock(self, skus: list[str]) -> list[StockLevel]:
        validate_sku_list(skus, "skus", required=True)
        async with self._sessions() as session:
            return await InventoryStore(session).get_stock(skus)

    async def adjust_stock(self, adjustment: Adjustment) -> StockLevel:
        validate_adjustment(adjustment)
        async with self._sessions.begin() as session:
            store = InventoryStore(session)
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
        wanted = validate_reservation_request(order_id, lines, currency, ttl_s)
        async with self._sessions.begin() as session:
            store = InventoryStore(session)
            existing = await store.get_reservation(order_id)
            if existing is not None:
                return self._replay(existing, wanted)
            catalogue = await store.prices([x.sku for x in wanted])
            priced = []
            for line in wanted:
                product = catalogue.get(line.sku)
                if product is None:
                    raise out_of_stock(line.sku, "unknown SKU")
                if product.currency != currency:
                    raise FailedPrecondition(
                        "CURRENCY_MISMATCH",
                        f"{line.sku} is priced in {product.currency}, not {currency}",
                        {"sku": line.sku, "currency": product.currency},
                    )
                priced.append(ReservationLine(line.sku, line.quantity, product.unit_price_minor))
            now = datetime.now(UTC)
            reservation = Reservation(
                order_id,
                ReservationState.RESERVED,
                tuple(priced),
                currency,
                now + timedelta(seconds=ttl_s or self._default_ttl_s),
                now,
            )
            if not await store.claim_reservation(reservation):
                # A concurrent call for the same order got there first: answer as it did.
                existing = await store.get_reservation(order_id)
                assert existing is not None
                return self._replay(existing, wanted)
            for line in reservation.lines:
                if not await store.take_available(line.sku, line.quantity):
                    # Raising rolls the whole transaction back: nothing stays reserved.
                    raise out_of_stock(line.sku, f"fewer than {line.quantity} units available")
            await store.add_lines(order_id, reservation.lines)
            await self._outbox.add(
                session,
                [
                    _event(
                        reservation,
                        events_pb2.StockReserved(
                            order_id=order_id, lines=_event_lines(reservation)
                        ),
                    )
                ],
            )
            return reservation

    @staticmethod
    def _replay(existing: Reservation, wanted: tuple[ReservationLine, ...]) -> Reservation:
        if existing.state is ReservationState.RELEASED:
            raise FailedPrecondition(
                "RESERVATION_RELEASED",
                f"order {existing.order_id} was released and cannot reserve again",
                {"order_id": existing.order_id},
            )
        if not existing.same_request(wanted):
            raise Conflict(
                "RESERVATION_MISMATCH",
                f"order {existing.order_id} already reserved other lines",
                {"order_id": existing.order_id},
            )
        return existing

    async def commit(self, order_id: str) -> Reservation:
        _validate_order_id(order_id)
        async with self._sessions.begin() as session:
            store = InventoryStore(session)
            current = await store.get_reservation(order_id, lock=True)
            if current is None:
                raise NotFound("reservation", order_id)
            if current.state is ReservationState.COMMITTED:
                return current
            committed = current.committed()
            await store.move(current.lines, COMMIT)
            await store.set_state(order_id, committed.state)
            await self._outbox.add(
                session,
                [
                    _event(
                        committed,
                        events_pb2.StockCommitted(order_id=order_id, lines=_event_lines(committed)),
                    )
                ],
            )
            return committed

    async def release(
        self, order_id: str, reason: str = "RELEASED", expired_only: bool = False
    ) -> Reservation | None:
        """Give the units back. Releasing an order that never reserved leaves a
        tombstone, so a reservation still in flight cannot land afterwards."""
        _validate_order_id(order_id)
        async with self._sessions.begin() as session:
            store = InventoryStore(session)
            current = await store.get_reservation(order_id, lock=True)
            if current is None:
                now = datetime.now(UTC)
                tombstone = Reservation(order_id, ReservationState.RELEASED, (), "XXX", now, now)
                if await store.claim_reservation(tombstone):
                    return tombstone
                current = await store.get_reservation(order_id, lock=True)
                assert current is not None
            if current.state is ReservationState.RELEASED:
                return current
            if expired_only and not (
                current.state is ReservationState.RESERVED and current.expired(datetime.now(UTC))
            ):
                return None  # committed or renewed since the sweep listed it
            moves = (
                RELEASE_COMMITTED
                if current.state is ReservationState.COMMITTED
                else RELEASE_RESERVED
            )
            await store.move(current.lines, moves)
            released = current.released()
            await store.set_state(order_id, released.state)
            await self._outbox.add(
                session,
                [
                    _event(
                        released,
                        events_pb2.StockReleased(
                            order_id=order_id, lines=_event_lines(released), reason=reason
                        ),
                    )
                ],
            )
            return released

    async def release_expired(self, limit: int = 100) -> int:
        """One sweep: release reservations whose time to live has passed. The look-up
        is untraced (most sweeps find nothing); each release makes a trace of its own."""
        with untraced():
            async with self._sessions() as session:
                order_ids = await InventoryStore(session).expired(datetime.now(UTC), limit)
        for order_id in order_ids:
            await self.release(order_id, reason="EXPIRED", expired_only=True)
        return len(order_ids)


def _validate_order_id(order_id: str) -> None:
    v = Validator()
    validate_order_id(v, order_id)
    v.raise_if_invalid()
