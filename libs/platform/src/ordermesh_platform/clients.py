"""gRPC channels from one service to another, configured once for every service: the
client library's channel (ordermesh_client.channels) with the service's settings, its
certificate and its tracing."""

from __future__ import annotations

import grpc

from ordermesh_client.channels import channel_options as client_channel_options
from ordermesh_client.channels import open_channel as open_client_channel
from ordermesh_platform.settings import ServiceSettings
from ordermesh_platform.telemetry import client_interceptors
from ordermesh_platform.tls import TlsFiles


def channel_options(settings: ServiceSettings, target: str = "") -> list[tuple[str, str | int]]:
    return client_channel_options(target, settings.client_lb_policy, settings.max_message_bytes)


def open_channel(
    address: str, settings: ServiceSettings, tls: TlsFiles | None = None
) -> grpc.aio.Channel:
    """A channel to another service (``address``: see ordermesh_platform.targets): mTLS
    with the service's own certificate when ORDERMESH_TLS_* are set (``tls`` overrides
    them), plaintext otherwise."""
    return open_client_channel(
        address,
        tls or settings.tls_files(),
        lb_policy=settings.client_lb_policy,
        max_message_bytes=settings.max_message_bytes,
        interceptors=client_interceptors(),
    )
