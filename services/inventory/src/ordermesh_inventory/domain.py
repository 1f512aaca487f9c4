"""The inventory domain: products and the stock of each SKU. No gRPC, no SQL."""

from __future__ import annotations

import enum
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ordermesh.common.v1 import money_pb2
from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import DomainEvent
from ordermesh_platform.errors import Conflict, FailedPrecondition, Validator
from ordermesh_platform.money import MAX_AMOUNT_MINOR, is_currency
from ordermesh_platform.validation import check_order_id, check_sku

MAX_NAME_LENGTH = 256
MAX_SKUS_PER_CALL = 1000
MAX_STOCK_DELTA = 10**9


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    unit_price_minor: int
    currency: str


@dataclass(frozen=True)
class StockLevel:
    sku: str
    available: int
    reserved: int
    committed: int

    def adjusted(self, delta: int) -> StockLevel:
        """Stock after adding ``delta`` available units; never below zero."""
        if self.available + delta < 0:
            raise FailedPrecondition(
                ErrorReason.INSUFFICIENT_STOCK,
                f"cannot remove {-delta} units of {self.sku}: {self.available} available",
                {"sku": self.sku, "available": str(self.available)},
            )
        return StockLevel(self.sku, self.available + delta, self.reserved, self.committed)


@dataclass(frozen=True)
class Adjustment:
    adjustment_id: str
    sku: str
    delta: int
    note: str


def validate_product(product: Product) -> None:
    v = Validator()
    check_sku(v, product.sku, "product.sku")
    v.check(
        0 < len(product.name) <= MAX_NAME_LENGTH,
        "product.name",
        f"must be 1-{MAX_NAME_LENGTH} characters",
    )
    v.storable(product.name, "product.name")
    v.check(
        0 <= product.unit_price_minor <= MAX_AMOUNT_MINOR,
        "product.unit_price.amount_minor",
        f"must be between 0 and {MAX_AMOUNT_MINOR}",
    )
    v.check(
        is_currency(product.currency),
        "product.unit_price.currency",
        "must be an ISO 4217 code such as EUR",
    )
    v.raise_if_invalid()


def validate_adjustment(adjustment: Adjustment) -> None:
    v = Validator()
    v.check(0 < len(adjustment.adjustment_id) <= 128, "adjustment_id", "must be 1-128 characters")
    v.storable(adjustment.adjustment_id, "adjustment_id")
    check_sku(v, adjustment.sku, "sku")
    v.check(
        adjustment.delta != 0 and abs(adjustment.delta) <= MAX_STOCK_DELTA,
        "delta",
        f"must be non-zero and at most {MAX_STOCK_DELTA} in size",
    )
    v.check(len(adjustment.note) <= 256, "note", "must be at most 256 characters")
    v.storable(adjustment.note, "note")
    v.raise_if_invalid()


def validate_sku_list(skus: list[str], field: str, required: bool) -> None:
    v = Validator()
    if required:
        v.check(len(skus) > 0, field, "must name at least one SKU")
    v.check(len(skus) <= MAX_SKUS_PER_CALL, field, f"must name at most {MAX_SKUS_PER_CALL}")
    for i, sku in enumerate(skus[:MAX_SKUS_PER_CALL]):
        check_sku(v, sku, f"{field}[{i}]")
    v.raise_if_invalid()


MAX_LINES = 50
MAX_QUANTITY = 1000
MAX_TTL_S = 24 * 3600
MAX_BATCH = 1000
TOMBSTONE_CURRENCY = "XXX"  # ISO 4217 "no currency": a tombstone holds no lines


class ReservationState(enum.StrEnum):
    RESERVED = "RESERVED"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"


@dataclass(frozen=True)
class ReservationLine:
    sku: str
    quantity: int
    unit_price_minor: int = 0


@dataclass(frozen=True)
class ReservationRequest:
    """One order's ask: these lines, priced in this currency, held for ``ttl_s``
    seconds (0: the service's default)."""

    order_id: str
    lines: tuple[ReservationLine, ...]
    currency: str
    ttl_s: float


@dataclass(frozen=True)
class Reservation:
    """The stock held for one order. Guards its own transitions."""

    order_id: str
    state: ReservationState
    lines: tuple[ReservationLine, ...]
    currency: str
    expires_at: datetime
    created_at: datetime

    @classmethod
    def tombstone(cls, order_id: str, now: datetime) -> Reservation:
        """Released before it reserved: a reservation still in flight cannot land."""
        return cls(order_id, ReservationState.RELEASED, (), TOMBSTONE_CURRENCY, now, now)

    def same_request(self, lines: tuple[ReservationLine, ...]) -> bool:
        return [(x.sku, x.quantity) for x in self.lines] == [(x.sku, x.quantity) for x in lines]

    def replayed(self, wanted: tuple[ReservationLine, ...]) -> Reservation:
        """The answer to the same order reserving again: itself, if it asks the same."""
        if self.state is ReservationState.RELEASED:
            raise FailedPrecondition(
                ErrorReason.RESERVATION_RELEASED,
                f"order {self.order_id} was released and cannot reserve again",
                {"order_id": self.order_id},
            )
        if not self.same_request(wanted):
            raise Conflict(
                ErrorReason.RESERVATION_MISMATCH,
                f"order {self.order_id} already reserved other lines",
                {"order_id": self.order_id},
            )
        return self

    def committed(self) -> Reservation:
        if self.state is ReservationState.RELEASED:
            raise FailedPrecondition(
                ErrorReason.RESERVATION_RELEASED,
                f"the reservation of order {self.order_id} was released",
                {"order_id": self.order_id},
            )
        return replace(self, state=ReservationState.COMMITTED)

    def expired(self, now: datetime) -> bool:
        expires_at = self.expires_at
        if expires_at.tzinfo is None:  # SQLite returns naive UTC
            expires_at = expires_at.replace(tzinfo=UTC)
        return expires_at < now

    def released(self) -> Reservation:
        return replace(self, state=ReservationState.RELEASED)


def out_of_stock(sku: str, detail: str) -> FailedPrecondition:
    return FailedPrecondition(ErrorReason.OUT_OF_STOCK, f"{sku}: {detail}", {"sku": sku})


def priced_lines(
    wanted: tuple[ReservationLine, ...], catalogue: Mapping[str, Product], currency: str
) -> tuple[ReservationLine, ...]:
    """The lines at the catalogue's prices; every SKU known and priced in ``currency``."""
    priced = []
    for line in wanted:
        product = catalogue.get(line.sku)
        if product is None:
            raise out_of_stock(line.sku, "unknown SKU")
        if product.currency != currency:
            raise FailedPrecondition(
                ErrorReason.CURRENCY_MISMATCH,
                f"{line.sku} is priced in {product.currency}, not {currency}",
                {"sku": line.sku, "currency": product.currency},
            )
        priced.append(ReservationLine(line.sku, line.quantity, product.unit_price_minor))
    return tuple(priced)


def take_all(available: MutableMapping[str, int], lines: tuple[ReservationLine, ...]) -> None:
    """Take every line's units out of ``available`` (units by SKU), or none of them:
    OUT_OF_STOCK names the first SKU, in line order, that has too few."""
    for line in lines:
        if available.get(line.sku, 0) < line.quantity:
            raise out_of_stock(line.sku, f"fewer than {line.quantity} units available")
    for line in lines:
        available[line.sku] -= line.quantity


def validate_reservation_request(
    order_id: str, lines: Sequence[ReservationLine], currency: str, ttl_s: float
) -> tuple[ReservationLine, ...]:
    """The lines sorted by SKU: every reservation takes its rows in that one order,
    so two reservations can never wait on each other."""
    v = Validator()
    check_order_id(v, order_id)
    v.check(0 < len(lines) <= MAX_LINES, "lines", f"must hold 1-{MAX_LINES} lines")
    for i, line in enumerate(lines[:MAX_LINES]):
        check_sku(v, line.sku, f"lines[{i}].sku")
        v.check(
            0 < line.quantity <= MAX_QUANTITY,
            f"lines[{i}].quantity",
            f"must be 1-{MAX_QUANTITY}",
        )
    v.check(len({x.sku for x in lines}) == len(lines), "lines", "must name each SKU once")
    v.check(is_currency(currency), "currency", "must be an ISO 4217 code such as EUR")
    v.check(0 <= ttl_s <= MAX_TTL_S, "ttl", f"must be 0-{MAX_TTL_S} seconds")
    v.raise_if_invalid()
    return tuple(sorted(lines, key=lambda x: x.sku))


# -- the events a reservation's transitions raise -----------------------------------------


def _event_lines(r: Reservation) -> list[events_pb2.EventLine]:
    return [
        events_pb2.EventLine(
            sku=x.sku,
            quantity=x.quantity,
            unit_price=money_pb2.Money(amount_minor=x.unit_price_minor, currency=r.currency),
        )
        for x in r.lines
    ]


def reserved_event(r: Reservation) -> DomainEvent:
    return DomainEvent(
        "reservation",
        r.order_id,
        events_pb2.StockReserved(order_id=r.order_id, lines=_event_lines(r)),
    )


def committed_event(r: Reservation) -> DomainEvent:
    return DomainEvent(
        "reservation",
        r.order_id,
        events_pb2.StockCommitted(order_id=r.order_id, lines=_event_lines(r)),
    )


def released_event(r: Reservation, reason: str) -> DomainEvent:
    payload = events_pb2.StockReleased(order_id=r.order_id, lines=_event_lines(r), reason=reason)
    return DomainEvent("reservation", r.order_id, payload)
