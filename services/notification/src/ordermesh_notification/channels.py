"""The channels a delivery goes out through: a log line, an e-mail over SMTP, a signed
webhook. Each sender either returns (the channel took the message) or raises
:class:`DeliveryFailed` with a message fit to store (no secrets)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib
import httpx

from ordermesh_notification.domain import Channel, Outgoing
from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Ordermesh-Signature"
EVENT_TYPE_HEADER = "X-Ordermesh-Event-Type"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_ERROR_CHARS = 500

_MESSAGE_ID_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class DeliveryFailed(Exception):
    """The channel did not take the message; the delivery is retried."""


class Sender(Protocol):
    async def send(self, message: Outgoing) -> None: ...


class LogSender:
    """CHANNEL_LOG: one structured log line per delivery."""

    async def send(self, message: Outgoing) -> None:
        log.info(
            "notification delivered",
            channel=message.channel.value,
            customer=message.customer_id,
            order=message.order_id,
            subject=message.subject,
            event_id=message.event_id,
        )


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = 10.0


def message_id(event_id: str, channel: Channel, sender: str) -> str:
    """The same Message-ID for every (re)send of one event's e-mail, so mail systems
    that keep Message-IDs drop a duplicate."""
    local = event_id if _MESSAGE_ID_SAFE.fullmatch(event_id) else _digest(event_id)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "ordermesh.invalid"
    return f"<{local}.{channel.value.lower()}@{domain}>"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def email_message(message: Outgoing, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.recipient
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = message_id(message.event_id, message.channel, sender)
    mail["X-Ordermesh-Event-Id"] = message.event_id
    mail.set_content(message.body)
    return mail


class SmtpSender:
    """CHANNEL_EMAIL: one plain-text e-mail to the address the preferences held."""

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    async def send(self, message: Outgoing) -> None:
        config = self._config
        if not message.recipient:
            raise DeliveryFailed("no e-mail address")
        try:
            mail = email_message(message, config.sender)
        except ValueError as error:  # a header the mail format cannot carry
            raise DeliveryFailed(f"unsendable e-mail: {error}") from error
        try:
            async with asyncio.timeout(config.timeout_s):
                await aiosmtplib.send(
                    mail,
                    hostname=config.host,
                    port=config.port,
                    username=config.username,
                    password=config.password,
                    start_tls=config.starttls,
                    timeout=config.timeout_s,
                )
        except TimeoutError as error:
            raise DeliveryFailed(f"SMTP timed out after {config.timeout_s} s") from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise DeliveryFailed(_short(f"SMTP {type(error).__name__}: {error}")) from error


def webhook_body(message: Outgoing) -> bytes:
    """The exact bytes POSTed and signed: compact JSON with sorted keys."""
    document: dict[str, object] = {
        "notification_id": message.notification_id,
        "event_id": message.event_id,
        "event_type": message.event_type,
        "order_id": message.order_id,
        "customer_id": message.customer_id,
        "subject": message.subject,
        "body": message.body,
        "occurred_at": message.occurred_at.isoformat() if message.occurred_at else None,
    }
    if message.amount is not None:
        document["amount"] = {
            "amount_minor": message.amount.amount_minor,
            "currency": message.amount.currency,
        }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=`` + the hex HMAC-SHA256 of the body under the shared secret."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    """CHANNEL_WEBHOOK: a signed JSON POST to the URL the preferences held; 2xx is success."""

    def __init__(self, client: httpx.AsyncClient, secret: bytes, timeout_s: float) -> None:
        self._client = client
        self._secret = secret
        self._timeout_s = timeout_s

    async def send(self, message: Outgoing) -> None:
        if not message.recipient:
            raise DeliveryFailed("no webhook URL")
        body = webhook_body(message)
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: message.event_id,
            EVENT_TYPE_HEADER: message.event_type,
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(
                    message.recipient, content=body, headers=headers, timeout=self._timeout_s
                )
        except TimeoutError as error:
            raise DeliveryFailed(f"webhook timed out after {self._timeout_s} s") from error
        except httpx.HTTPError as error:
            # httpx may name the URL in its messages; a URL can carry credentials.
            text = str(error).replace(message.recipient, _redacted_url(message.recipient))
            raise DeliveryFailed(_short(f"webhook {type(error).__name__}: {text}")) from error
        if not response.is_success:
            raise DeliveryFailed(f"webhook answered HTTP {response.status_code}")


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…"


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
