"""The payment aggregate and its state machine. No gRPC, no SQL."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from google.protobuf.message import Message

from ordermesh.common.v1 import money_pb2, risk_pb2
from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.events.v1 import events_pb2
from ordermesh_messaging.events import DomainEvent
from ordermesh_payment.risk.events import Attempt
from ordermesh_payment.risk.wire import attempt_to_pb
from ordermesh_platform.errors import Conflict, FailedPrecondition, Validator
from ordermesh_platform.money import MAX_AMOUNT_MINOR, is_currency
from ordermesh_platform.validation import check_customer_id, check_order_id, check_sku

MAX_TOKEN_LENGTH = 256
# Items of one batch call: enough to amortize a round trip, small enough for one answer.
MAX_BATCH_ITEMS = 1000
# The order's lines an authorization may carry for risk scoring (PlaceOrder's own bound).
MAX_ITEMS = 50
MAX_ITEM_QUANTITY = 1000
# The decline reason of a payment that risk scoring refused before the provider was asked.
RISK_DECLINED = ErrorReason.Name(ErrorReason.RISK_DECLINED)


class PaymentState(enum.StrEnum):
    # Recorded before the provider is asked, so a crash mid-call is found and finished.
    AUTHORIZING = "AUTHORIZING"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    REFUNDED = "REFUNDED"
    DECLINED = "DECLINED"


# Every legal move. Anything else is refused with ILLEGAL_PAYMENT_TRANSITION.
TRANSITIONS = {
    PaymentState.AUTHORIZING: {
        PaymentState.AUTHORIZED,
        PaymentState.DECLINED,
        PaymentState.VOIDED,
    },
    PaymentState.AUTHORIZED: {PaymentState.CAPTURED, PaymentState.VOIDED},
    PaymentState.CAPTURED: {PaymentState.REFUNDED},
    PaymentState.VOIDED: set(),
    PaymentState.REFUNDED: set(),
    PaymentState.DECLINED: set(),
}


class RiskVerdict(enum.StrEnum):
    """What risk scoring did with a payment."""

    APPROVE = "approve"
    DECLINE = "decline"
    EXPLORE = "explore"  # a would-be decline approved at random (the exploration share)


@dataclass(frozen=True)
class RiskAssessment:
    """Risk scoring's outcome for a payment's authorization."""

    score: float
    verdict: RiskVerdict
    model_version: str  # "rules" when the rules decided
    variant: str  # champion, challenger or rules


_VERDICT_PB = {
    RiskVerdict.APPROVE: risk_pb2.RISK_DECISION_APPROVE,
    RiskVerdict.DECLINE: risk_pb2.RISK_DECISION_DECLINE,
    RiskVerdict.EXPLORE: risk_pb2.RISK_DECISION_EXPLORE,
}


def risk_assessment_to_pb(a: RiskAssessment | None) -> risk_pb2.RiskAssessment | None:
    """The assessment on the wire; None (the field absent) when it was not scored."""
    if a is None:
        return None
    return risk_pb2.RiskAssessment(
        score=a.score,
        decision=_VERDICT_PB[a.verdict],
        model_version=a.model_version,
        variant=a.variant,
    )


@dataclass(frozen=True)
class Payment:
    payment_id: str
    order_id: str
    customer_id: str
    state: PaymentState
    amount_minor: int
    currency: str
    decline_reason: str
    psp_reference: str
    created_at: datetime
    updated_at: datetime
    risk: RiskAssessment | None = None  # None: not scored (risk scoring off)

    def moved_to(self, state: PaymentState, **changes: str) -> Payment:
        """The payment in ``state``: the same payment when it is there already (a retry),
        or FAILED_PRECONDITION when the state machine has no such move."""
        if state is self.state:
            return self
        if state not in TRANSITIONS[self.state]:
            raise FailedPrecondition(
                ErrorReason.ILLEGAL_PAYMENT_TRANSITION,
                f"payment of order {self.order_id} is {self.state.value}, cannot become "
                f"{state.value}",
                {"order_id": self.order_id, "state": self.state.value, "wanted": state.value},
            )
        return replace(self, state=state, **changes)  # type: ignore[arg-type]

    def check_same_request(self, amount_minor: int, currency: str) -> None:
        if (self.amount_minor, self.currency) != (amount_minor, currency):
            raise Conflict(
                ErrorReason.PAYMENT_MISMATCH,
                f"order {self.order_id} was authorized for another amount",
                {"order_id": self.order_id},
            )

    def refuse_if_finished_without_money(self) -> None:
        """A retried authorization of a declined or voided payment fails as it did."""
        if self.state is PaymentState.DECLINED and self.decline_reason == RISK_DECLINED:
            assessment = risk_assessment_to_pb(self.risk)
            raise FailedPrecondition(
                ErrorReason.RISK_DECLINED,
                f"the payment of order {self.order_id} was declined by risk scoring",
                {"order_id": self.order_id, "decline_reason": RISK_DECLINED},
                details=() if assessment is None else (assessment,),
            )
        if self.state is PaymentState.DECLINED:
            raise declined(self.order_id, self.decline_reason)
        if self.state is PaymentState.VOIDED:
            raise FailedPrecondition(
                ErrorReason.PAYMENT_VOIDED,
                f"the payment of order {self.order_id} was voided",
                {"order_id": self.order_id},
            )


@dataclass(frozen=True)
class RiskSignals:
    """What the caller knows of the person paying, for risk scoring; "" when unknown."""

    client_ip: str = ""
    device_id: str = ""
    email_domain: str = ""
    billing_country: str = ""
    shipping_country: str = ""
    account_created_ms: int | None = None
    account_created_valid: bool = True  # False: sent, but no time a Timestamp can hold

    def validate(self, v: Validator) -> None:
        v.check(
            self.account_created_valid,
            "risk_signals.account_created_at",
            "must be a valid timestamp (years 1 to 9999)",
        )
        for name, limit in SIGNAL_LIMITS.items():
            value = getattr(self, name)
            v.check(len(value) <= limit, f"risk_signals.{name}", f"at most {limit} characters")
            v.storable(value, f"risk_signals.{name}")


SIGNAL_LIMITS = {
    "client_ip": 64,
    "device_id": 128,
    "email_domain": 128,
    "billing_country": 2,
    "shipping_country": 2,
}


@dataclass(frozen=True)
class PaymentItem:
    """One line of the order paid for, as risk scoring reads it."""

    sku: str
    quantity: int
    unit_price_minor: int
    currency: str  # of the unit price: the authorization's

    def validate(self, v: Validator, field: str, currency: str) -> None:
        check_sku(v, self.sku, f"{field}.sku")
        v.check(
            0 < self.quantity <= MAX_ITEM_QUANTITY,
            f"{field}.quantity",
            f"must be 1-{MAX_ITEM_QUANTITY}",
        )
        v.check(
            0 <= self.unit_price_minor <= MAX_AMOUNT_MINOR,
            f"{field}.unit_price.amount_minor",
            f"must be 0-{MAX_AMOUNT_MINOR}",
        )
        v.check(
            self.currency == currency,
            f"{field}.unit_price.currency",
            "must be the amount's currency",
        )


@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization asked for: the order id is its idempotency key."""

    order_id: str
    customer_id: str
    amount_minor: int
    currency: str
    token: str
    # Neither is part of the request's identity: a retry with others is the same payment.
    signals: RiskSignals | None = None
    items: tuple[PaymentItem, ...] = ()  # the order's lines, for risk scoring

    def validate(self) -> None:
        v = Validator()
        if self.signals is not None:
            self.signals.validate(v)
        v.check(len(self.items) <= MAX_ITEMS, "items", f"must hold at most {MAX_ITEMS} lines")
        for i, item in enumerate(self.items[:MAX_ITEMS]):
            item.validate(v, f"items[{i}]", self.currency)
        validate_authorization(
            self.order_id, self.customer_id, self.amount_minor, self.currency, self.token, v
        )


def declined(order_id: str, reason: str) -> FailedPrecondition:
    return FailedPrecondition(
        ErrorReason.PAYMENT_DECLINED,
        f"the payment provider declined: {reason}",
        {"order_id": order_id, "decline_reason": reason},
    )


def validate_authorization(
    order_id: str,
    customer_id: str,
    amount_minor: int,
    currency: str,
    token: str,
    v: Validator | None = None,
) -> None:
    v = v or Validator()
    check_order_id(v, order_id)
    check_customer_id(v, customer_id)
    v.check(
        0 < amount_minor <= MAX_AMOUNT_MINOR,
        "amount.amount_minor",
        f"must be 1-{MAX_AMOUNT_MINOR}",
    )
    v.check(is_currency(currency), "amount.currency", "must be an ISO 4217 code such as EUR")
    v.check(
        0 < len(token) <= MAX_TOKEN_LENGTH,
        "payment_token",
        f"must be 1-{MAX_TOKEN_LENGTH} characters",
    )
    v.raise_if_invalid()


# -- the events that report a payment reaching a state ------------------------------------


def _event(p: Payment, attempt: Attempt | None) -> Message | None:
    money = money_pb2.Money(amount_minor=p.amount_minor, currency=p.currency)
    common = {"payment_id": p.payment_id, "order_id": p.order_id, "customer_id": p.customer_id}
    risk = risk_assessment_to_pb(p.risk)
    scored = attempt_to_pb(attempt) if attempt is not None else None
    match p.state:
        case PaymentState.AUTHORIZED:
            return events_pb2.PaymentAuthorized(
                **common, amount=money, risk_assessment=risk, risk_attempt=scored
            )
        case PaymentState.DECLINED:
            return events_pb2.PaymentDeclined(
                **common,
                decline_reason=p.decline_reason,
                risk_assessment=risk,
                risk_attempt=scored,
            )
        case PaymentState.CAPTURED:
            return events_pb2.PaymentCaptured(**common, amount=money)
        case PaymentState.VOIDED:
            return events_pb2.PaymentVoided(**common, amount=money)
        case PaymentState.REFUNDED:
            return events_pb2.PaymentRefunded(**common, amount=money)
    return None  # AUTHORIZING is internal: nobody outside waits for it


def events_of(
    moved: Iterable[Payment], scored: Mapping[str, Attempt] | None = None
) -> list[DomainEvent]:
    """The events reporting that these payments reached their state; an authorization
    ended carries its attempt as risk scoring saw it (``scored``, by order id), for
    the risk features."""
    scored = scored or {}
    return [
        DomainEvent("payment", p.order_id, event)
        for p in moved
        if (event := _event(p, scored.get(p.order_id))) is not None
    ]
