"""Real peers for the notification channels, started by tests on loopback: an SMTP
server (aiosmtpd) and a small HTTP endpoint with a scripted sequence of answers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http import HTTPStatus

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

SECRET = "test-webhook-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- a real SMTP server --------------------------------------------------------------


class MailBox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[MailBox, int]]:
    inbox = MailBox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


# --- a real HTTP endpoint ------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def signature_is_valid(self) -> bool:
        digest = hmac.new(SECRET.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(
            self.headers.get("x-ordermesh-signature", ""), f"sha256={digest}"
        )


@dataclass
class WebhookEndpoint:
    """A minimal HTTP/1.1 server: answers the scripted statuses in turn, then ``then``."""

    script: list[int]
    then: int
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/orders"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            assert request_line.startswith(b"POST /hooks/orders "), request_line
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(headers, body))
            status = self.script.pop(0) if self.script else self.then
            writer.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()


async def webhook_endpoint(script: list[int], then: int) -> tuple[WebhookEndpoint, asyncio.Server]:
    endpoint = WebhookEndpoint(script, then)
    server = await asyncio.start_server(endpoint.serve, "127.0.0.1", 0)
    endpoint.port = server.sockets[0].getsockname()[1]
    return endpoint, server
