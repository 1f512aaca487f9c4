"""Notification preferences, the customer-facing facts we tell, delivery records and
their retry policy. No gRPC, no SQL, no network."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlparse

from ordermesh_platform.errors import Validator
from ordermesh_platform.resilience import Backoff
from ordermesh_platform.validation import check_customer_id


class Channel(enum.StrEnum):
    LOG = "LOG"
    EMAIL = "EMAIL"
    WEBHOOK = "WEBHOOK"


class DeliveryState(enum.StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Preferences:
    customer_id: str
    channels: tuple[Channel, ...] = (Channel.LOG,)
    email: str = ""
    webhook_url: str = ""

    @classmethod
    def default_for(cls, customer_id: str) -> Preferences:
        return cls(customer_id)


@dataclass(frozen=True)
class Delivery:
    notification_id: str
    event_id: str
    event_type: str
    customer_id: str
    order_id: str
    channel: Channel
    state: DeliveryState
    attempts: int
    subject: str
    last_error: str
    created_at: datetime
    delivered_at: datetime | None = field(default=None)


def _plain(text: str) -> bool:
    """No whitespace and no control characters (NUL included): an address or URL."""
    return all(c.isprintable() and not c.isspace() for c in text)


def _http_url(text: str) -> bool:
    """An http(s) URL with a host, whose port (if any) is a port. urlparse raises on
    some malformed ones ("https://[") and reads the port only when asked."""
    if len(text) >= 2048 or not _plain(text):  # urlparse drops whitespace: check first
        return False
    try:
        url = urlparse(text)
        _ = url.port
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.hostname)


def validate_preferences(prefs: Preferences, channel_count: int, unknown_channel: bool) -> None:
    v = Validator()
    check_customer_id(v, prefs.customer_id, "preferences.customer_id")
    v.check(not unknown_channel, "preferences.channels", "holds an unknown channel")
    v.check(channel_count <= len(Channel), "preferences.channels", "names a channel twice")
    # The address is stored whichever channels are chosen: bound it always.
    v.check(
        len(prefs.email) <= 254 and _plain(prefs.email),
        "preferences.email",
        "must be at most 254 characters, without spaces or control characters",
    )
    if Channel.EMAIL in prefs.channels:
        v.check(
            "@" in prefs.email,
            "preferences.email",
            "must be an e-mail address when CHANNEL_EMAIL is chosen",
        )
    if Channel.WEBHOOK in prefs.channels or prefs.webhook_url:
        v.check(
            _http_url(prefs.webhook_url),
            "preferences.webhook_url",
            "must be an http(s) URL when CHANNEL_WEBHOOK is chosen",
        )
    v.raise_if_invalid()


class NoticeKind(enum.StrEnum):
    """The customer-facing events; every other event type is not told to anyone."""

    ORDER_CONFIRMED = "OrderConfirmed"
    ORDER_REJECTED = "OrderRejected"
    ORDER_CANCELLED = "OrderCancelled"
    PAYMENT_REFUNDED = "PaymentRefunded"


@dataclass(frozen=True)
class Money:
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class NoticeLine:
    sku: str
    quantity: int
    unit_price: Money | None = None


@dataclass(frozen=True)
class Notice:
    """One customer-facing event, as the templates need it."""

    kind: NoticeKind
    event_id: str
    event_type: str
    order_id: str
    customer_id: str
    occurred_at: datetime | None = None
    amount: Money | None = None  # the total, the released or the refunded amount
    reason: str = ""
    reason_detail: str = ""
    payment_id: str = ""
    lines: tuple[NoticeLine, ...] = ()


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


@dataclass(frozen=True)
class Outgoing:
    """A due delivery claimed by one worker: everything its channel needs to send it."""

    notification_id: str
    event_id: str
    event_type: str
    customer_id: str
    order_id: str
    channel: Channel
    recipient: str  # the e-mail address or webhook URL when the event was handled; "" for LOG
    subject: str
    body: str
    occurred_at: datetime | None
    amount: Money | None
    attempts: int  # tries recorded before this one
    traceparent: str = ""  # the consuming span's: the delivery continues that trace


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: the n-th failed try waits ``base_s * 2**(n-1)``, at most
    ``max_backoff_s``; the ``max_attempts``-th failed try is final."""

    max_attempts: int = 8
    base_s: float = 0.5
    max_backoff_s: float = 300.0

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th try (1-based) failed."""
        return Backoff(self.base_s, self.max_backoff_s, jitter=0.0).ceiling_s(attempt)

    def after_failure(self, attempts_before: int, now: datetime) -> Retry | GiveUp:
        attempt = attempts_before + 1
        if attempt >= self.max_attempts:
            return GiveUp(attempt)
        return Retry(attempt, now + timedelta(seconds=self.delay_after(attempt)))


@dataclass(frozen=True)
class Sent:
    attempts: int
    at: datetime


@dataclass(frozen=True)
class Retry:
    attempts: int
    next_attempt_at: datetime


@dataclass(frozen=True)
class GiveUp:
    attempts: int
