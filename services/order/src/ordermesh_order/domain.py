"""The Order aggregate: its states, the transitions it allows, the events it raises.
No gRPC, no SQL: the saga and the store move it only through these methods."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from google.protobuf.message import Message

from ordermesh.common.v1 import money_pb2
from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import DomainEvent
from ordermesh_platform.errors import Conflict, FailedPrecondition, Validator
from ordermesh_platform.money import is_currency
from ordermesh_platform.validation import (
    check_customer_id,
    check_identifier,
    check_order_id,
    check_sku,
)

MAX_LINES = 50
MAX_QUANTITY = 1000
MAX_ID_LENGTH = 128
MAX_TOKEN_LENGTH = 256
MAX_NOTE_LENGTH = 512
MAX_RISK_SIGNALS_LENGTH = 1024


class OrderState(enum.StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


FINAL_STATES = frozenset({OrderState.CONFIRMED, OrderState.REJECTED, OrderState.CANCELLED})


class Reason(enum.StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    PAYMENT_UNAVAILABLE = "PAYMENT_UNAVAILABLE"
    SAGA_TIMEOUT = "SAGA_TIMEOUT"
    CANCELLED_BY_CUSTOMER = "CANCELLED_BY_CUSTOMER"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    RISK_DECLINED = "RISK_DECLINED"


class Work(enum.StrEnum):
    """What the saga runner still owes the order. Persisted with the order, so a crash
    loses none of it: the recovery worker picks up whatever is left."""

    NONE = ""
    FORWARD = "FORWARD"  # PENDING: reserve, authorize, confirm
    COMPENSATE = "COMPENSATE"  # REJECTED: release the stock, void the payment
    FULFIL = "FULFIL"  # CONFIRMED: capture the payment, commit the stock
    CANCEL = "CANCEL"  # CANCELLED: void or refund the payment, release the stock


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price_minor: int | None = None

    @property
    def total_minor(self) -> int | None:
        return None if self.unit_price_minor is None else self.unit_price_minor * self.quantity


@dataclass
class Order:
    order_id: str
    customer_id: str
    idempotency_key: str
    request_hash: str
    state: OrderState
    lines: tuple[OrderLine, ...]
    currency: str
    payment_token: str
    created_at: datetime
    updated_at: datetime
    total_minor: int | None = None
    # The caller's risk signals as JSON, passed on to payment untouched; "" when none.
    risk_signals: str = ""
    reason: Reason | None = None
    reason_detail: str = ""
    reason_metadata: dict[str, str] = field(default_factory=dict)
    payment_id: str = ""
    # Payment's risk assessment of the authorization as JSON, kept as it answered (an
    # approval's or a risk decline's); "" when it sent none (risk scoring off, a free
    # order, not authorized yet).
    risk_assessment: str = ""
    work: Work = Work.FORWARD
    version: int = 1
    events: list[DomainEvent] = field(default_factory=list, compare=False, repr=False)

    # -- creation --------------------------------------------------------------------

    @classmethod
    def place(cls, order_id: str, request: PlaceOrder, now: datetime | None = None) -> Order:
        now = now or datetime.now(UTC)
        order = cls(
            order_id=order_id,
            customer_id=request.customer_id,
            idempotency_key=request.idempotency_key,
            request_hash=request.fingerprint(),
            state=OrderState.PENDING,
            lines=request.lines,
            currency=request.currency,
            payment_token=request.payment_token,
            created_at=now,
            updated_at=now,
            risk_signals=request.risk_signals,
        )
        order._record(
            events_pb2.OrderCreated(
                order_id=order_id,
                customer_id=order.customer_id,
                lines=order._event_lines(),
                currency=order.currency,
            )
        )
        return order

    # -- transitions -----------------------------------------------------------------

    def confirm(
        self, priced: tuple[OrderLine, ...], payment_id: str, risk_assessment: str = ""
    ) -> None:
        self._require(OrderState.PENDING, "confirm")
        self.lines = priced
        self.total_minor = sum(line.total_minor or 0 for line in priced)
        self.payment_id = payment_id
        self.risk_assessment = risk_assessment
        self._move(OrderState.CONFIRMED, Work.FULFIL)
        self._record(
            events_pb2.OrderConfirmed(
                order_id=self.order_id,
                customer_id=self.customer_id,
                lines=self._event_lines(),
                total=self._money(self.total_minor),
                payment_id=payment_id,
            )
        )

    def reject(
        self,
        reason: Reason,
        detail: str,
        metadata: dict[str, str] | None = None,
        risk_assessment: str = "",
    ) -> None:
        """Decide the rejection. The compensations are owed from here on (Work.COMPENSATE),
        so the decision is never lost, and never taken back. ``risk_assessment``: payment's
        assessment of a risk decline, kept as for a confirmed order."""
        self._require(OrderState.PENDING, "reject")
        self.reason, self.reason_detail = reason, detail
        self.reason_metadata = dict(metadata or {})
        self.risk_assessment = risk_assessment
        self._move(OrderState.REJECTED, Work.COMPENSATE)
        self._record(
            events_pb2.OrderRejected(
                order_id=self.order_id,
                customer_id=self.customer_id,
                reason=reason.value,
                reason_detail=detail,
            )
        )

    def cancel(self, reason: Reason, note: str) -> bool:
        """Cancel a confirmed order; False when it is cancelled already (a retry)."""
        if self.state is OrderState.CANCELLED:
            return False
        if self.state is not OrderState.CONFIRMED:
            raise FailedPrecondition(
                ErrorReason.ORDER_NOT_CANCELLABLE,
                f"order {self.order_id} is {self.state.value}; only a confirmed order "
                "can be cancelled",
                {"order_id": self.order_id, "state": self.state.value},
            )
        self.reason, self.reason_detail = reason, note
        self._move(OrderState.CANCELLED, Work.CANCEL)
        self._record(
            events_pb2.OrderCancelled(
                order_id=self.order_id,
                customer_id=self.customer_id,
                reason=reason.value,
                amount=self._money(self.total_minor or 0),
            )
        )
        return True

    def work_done(self, work: Work) -> None:
        """The runner finished ``work`` (a no-op if the order owes something else now)."""
        if self.work is work:
            self.work = Work.NONE
            self.updated_at = datetime.now(UTC)

    # -- reading ---------------------------------------------------------------------

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def pull_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events

    def check_same_request(self, request: PlaceOrder) -> None:
        if request.fingerprint() != self.request_hash:
            raise Conflict(
                ErrorReason.IDEMPOTENCY_KEY_REUSED,
                "this idempotency key was used for a different order",
                {"order_id": self.order_id, "idempotency_key": self.idempotency_key},
            )

    # -- helpers ---------------------------------------------------------------------

    def _require(self, state: OrderState, action: str) -> None:
        if self.state is not state:
            raise FailedPrecondition(
                ErrorReason.ILLEGAL_ORDER_TRANSITION,
                f"cannot {action} order {self.order_id}: it is {self.state.value}",
                {"order_id": self.order_id, "state": self.state.value},
            )

    def _move(self, state: OrderState, work: Work) -> None:
        self.state, self.work = state, work
        self.updated_at = datetime.now(UTC)

    def _record(self, payload: Message) -> None:
        self.events.append(DomainEvent("order", self.order_id, payload))

    def _money(self, amount_minor: int) -> money_pb2.Money:
        return money_pb2.Money(amount_minor=amount_minor, currency=self.currency)

    def _event_lines(self) -> list[events_pb2.EventLine]:
        return [
            events_pb2.EventLine(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=None
                if line.unit_price_minor is None
                else self._money(line.unit_price_minor),
            )
            for line in self.lines
        ]


@dataclass(frozen=True)
class PlaceOrder:
    """A validated PlaceOrder request."""

    customer_id: str
    idempotency_key: str
    lines: tuple[OrderLine, ...]
    currency: str
    payment_token: str
    risk_signals: str = ""  # not part of the order's identity (see fingerprint)

    def fingerprint(self) -> str:
        """What makes two requests 'the same order' for idempotency."""
        canonical = json.dumps(
            [
                self.customer_id,
                self.idempotency_key,
                [[x.sku, x.quantity] for x in self.lines],
                self.currency,
                self.payment_token,
            ]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def validated(
        cls,
        customer_id: str,
        idempotency_key: str,
        items: list[tuple[str, int]],
        currency: str,
        payment_token: str,
        risk_signals: str = "",
    ) -> PlaceOrder:
        v = Validator()
        check_customer_id(v, customer_id)
        check_identifier(v, idempotency_key, "idempotency_key", MAX_ID_LENGTH)
        v.check(0 < len(items) <= MAX_LINES, "items", f"must hold 1-{MAX_LINES} lines")
        for i, (sku, quantity) in enumerate(items[:MAX_LINES]):
            check_sku(v, sku, f"items[{i}].sku")
            v.check(
                0 < quantity <= MAX_QUANTITY, f"items[{i}].quantity", f"must be 1-{MAX_QUANTITY}"
            )
        v.check(len({sku for sku, _ in items}) == len(items), "items", "must name each SKU once")
        v.check(is_currency(currency), "currency", "must be an ISO 4217 code such as EUR")
        v.check(
            0 < len(payment_token) <= MAX_TOKEN_LENGTH,
            "payment.token",
            f"must be 1-{MAX_TOKEN_LENGTH} characters",
        )
        v.storable(payment_token, "payment.token")
        v.check(
            len(risk_signals) <= MAX_RISK_SIGNALS_LENGTH,
            "risk_signals",
            f"must be at most {MAX_RISK_SIGNALS_LENGTH} characters as JSON",
        )
        v.storable(risk_signals, "risk_signals")
        v.raise_if_invalid()
        return cls(
            customer_id,
            idempotency_key,
            tuple(OrderLine(sku, quantity) for sku, quantity in items),
            currency,
            payment_token,
            risk_signals,
        )


def priced_lines(
    lines: tuple[OrderLine, ...], unit_prices: dict[str, int]
) -> tuple[OrderLine, ...]:
    """The order's lines with the prices inventory reserved them at."""
    return tuple(replace(x, unit_price_minor=unit_prices[x.sku]) for x in lines)


def validate_cancel(order_id: str, note: str) -> None:
    v = Validator()
    check_order_id(v, order_id)
    v.check(len(note) <= MAX_NOTE_LENGTH, "note", f"must be at most {MAX_NOTE_LENGTH} characters")
    v.storable(note, "note")
    v.raise_if_invalid()
