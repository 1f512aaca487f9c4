"""Notification preferences and delivery records. No gRPC, no SQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlparse

from ordermesh_platform.errors import Validator

MAX_ID_LENGTH = 128


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


def validate_customer_id(v: Validator, customer_id: str, name: str) -> None:
    v.check(0 < len(customer_id) <= MAX_ID_LENGTH, name, f"must be 1-{MAX_ID_LENGTH} characters")


def validate_preferences(prefs: Preferences, channel_count: int, unknown_channel: bool) -> None:
    v = Validator()
    validate_customer_id(v, prefs.customer_id, "preferences.customer_id")
    v.check(not unknown_channel, "preferences.channels", "holds an unknown channel")
    v.check(channel_count <= len(Channel), "preferences.channels", "names a channel twice")
    if Channel.EMAIL in prefs.channels:
        v.check(
            "@" in prefs.email and len(prefs.email) <= 254,
            "preferences.email",
            "must be an e-mail address when CHANNEL_EMAIL is chosen",
        )
    if Channel.WEBHOOK in prefs.channels or prefs.webhook_url:
        url = urlparse(prefs.webhook_url)
        v.check(
            url.scheme in ("http", "https") and bool(url.netloc) and len(prefs.webhook_url) < 2048,
            "preferences.webhook_url",
            "must be an http(s) URL when CHANNEL_WEBHOOK is chosen",
        )
    v.raise_if_invalid()
