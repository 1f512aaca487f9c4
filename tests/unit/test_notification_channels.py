"""Channels without a network: the webhook's signature and headers (through an httpx
mock transport), the e-mail's Message-ID, the log line."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import httpx
import pytest
from structlog.testing import capture_logs

from ordermesh_notification.channels import (
    DeliveryFailed,
    LogSender,
    WebhookSender,
    email_message,
    message_id,
    sign,
)
from ordermesh_notification.domain import Channel, Money, Outgoing

SECRET = b"s3cret"


def _outgoing(channel: Channel = Channel.WEBHOOK, recipient: str = "https://h.test/x") -> Outgoing:
    return Outgoing(
        notification_id="n-1",
        event_id="8d3c1f0e-2b1a-4c55-9a7e-000000000001",
        event_type="ordermesh.events.v1.OrderConfirmed",
        customer_id="c1",
        order_id="ord-42",
        channel=channel,
        recipient=recipient,
        subject="Order ord-42 confirmed",
        body="Your order ord-42 is confirmed.\nTotal: 12.34 EUR\n",
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        amount=Money(1234, "EUR"),
        attempts=0,
    )


def test_the_signature_is_the_hex_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"event_id":"e1"}'
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sign(SECRET, body), expected)
    assert not hmac.compare_digest(sign(SECRET, body + b" "), expected)
    assert not hmac.compare_digest(sign(b"other", body), expected)


async def test_a_webhook_posts_signed_json_with_the_event_id_as_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await WebhookSender(client, SECRET, timeout_s=5).send(_outgoing())
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://h.test/x"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "8d3c1f0e-2b1a-4c55-9a7e-000000000001"
    assert request.headers["x-ordermesh-event-type"] == "ordermesh.events.v1.OrderConfirmed"
    digest = hmac.new(SECRET, request.content, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-ordermesh-signature"], f"sha256={digest}")
    document = json.loads(request.content)
    assert document["order_id"] == "ord-42"
    assert document["customer_id"] == "c1"
    assert document["subject"] == "Order ord-42 confirmed"
    assert document["occurred_at"] == "2026-01-02T03:04:05+00:00"
    assert document["amount"] == {"amount_minor": 1234, "currency": "EUR"}


@pytest.mark.parametrize("status", [301, 400, 410, 500, 503])
async def test_a_webhook_answer_other_than_2xx_is_a_failure(status: int) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(DeliveryFailed, match=f"HTTP {status}"):
            await WebhookSender(client, SECRET, timeout_s=5).send(_outgoing())


async def test_a_webhook_transport_error_is_a_failure_that_does_not_store_the_url() -> None:
    url = "https://user:pa55word@h.test/hook?token=t0ken"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {url}", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(DeliveryFailed) as raised:
            await WebhookSender(client, SECRET, timeout_s=5).send(_outgoing(recipient=url))
    assert "ConnectError" in str(raised.value)
    assert "pa55word" not in str(raised.value)
    assert "t0ken" not in str(raised.value)


def test_every_send_of_one_events_email_carries_the_same_message_id() -> None:
    first = email_message(_outgoing(Channel.EMAIL, "c1@example.com"), "shop@example.com")
    again = email_message(_outgoing(Channel.EMAIL, "c1@example.com"), "shop@example.com")
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] == "<8d3c1f0e-2b1a-4c55-9a7e-000000000001.email@example.com>"
    assert first["To"] == "c1@example.com"
    assert first["Subject"] == "Order ord-42 confirmed"
    other = message_id("another-event", Channel.EMAIL, "shop@example.com")
    assert other != first["Message-ID"]
    named = message_id("another-event", Channel.EMAIL, "Shop <shop@example.com>")
    assert named == "<another-event.email@example.com>"


def test_an_event_id_unfit_for_a_message_id_is_hashed_into_one() -> None:
    made = message_id("a b<c>@d", Channel.EMAIL, "shop@example.com")
    local = made.strip("<>").split("@")[0]
    assert local.replace(".email", "").isalnum()


async def test_the_log_channel_writes_one_line_naming_customer_order_and_subject() -> None:
    with capture_logs() as logs:
        await LogSender().send(_outgoing(Channel.LOG, ""))
    (line,) = [entry for entry in logs if entry["event"] == "notification delivered"]
    assert line["channel"] == "LOG"
    assert line["customer"] == "c1"
    assert line["order"] == "ord-42"
    assert line["subject"] == "Order ord-42 confirmed"
