"""gRPC channels from one service to another, configured once for every service."""

from __future__ import annotations

import json

import grpc

from ordermesh_platform.settings import ServiceSettings
from ordermesh_platform.targets import grpc_target, target_authority
from ordermesh_platform.telemetry import client_interceptors
from ordermesh_platform.tls import TlsFiles, channel_credentials

# Which failures a channel retries by itself, and how:
# - UNAVAILABLE: the call never reached a server (or the server was going away).
# - RESOURCE_EXHAUSTED: the server shed the call before doing any work (it also sends
#   gRPC's pushback, `grpc-retry-pushback-ms`, which replaces the backoff). Every
#   ordermesh RPC is idempotent (PlaceOrder by its key, the rest by order id), so
#   a repeated call can never act twice, whatever the code.
# Nothing else is retried here: DEADLINE_EXCEEDED means the caller's time is gone, and
# the saga retries what it considers transient itself, within its own deadline.
# Backoff is exponential with gRPC's own jitter (each delay is random in [0, backoff]).
# retryThrottling is the retry budget: each failed attempt costs a token, each success
# returns 0.1; with half of the 10 tokens gone, the channel stops retrying until calls
# succeed again, so retries add at most a small fraction to an overloaded peer's load.
# "timeout" caps any call whose caller set no deadline; callers' own deadlines (the
# saga's step timeouts) are shorter and win.
# loadBalancingConfig: see service_config(). A replica that goes away costs only the
# calls it had in flight: SIGTERM drains (GOAWAY, so calls not yet sent move to another
# connection), SIGKILL fails its calls UNAVAILABLE, which the retry policy sends again,
# and round_robin leaves the broken subchannel out of its next picks.
RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


_RETRIES = {
    "methodConfig": [
        {
            "name": [{}],
            "timeout": "30s",
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": list(RETRYABLE_CODES),
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


def service_config(lb_policy: str = "round_robin") -> str:
    """The channel's gRPC service config: retries, their budget, the default call
    timeout, and the load-balancing policy over the addresses the target resolves to
    (``round_robin``: every replica, calls in turn)."""
    return json.dumps({**_RETRIES, "loadBalancingConfig": [{lb_policy: {}}]})


def channel_options(settings: ServiceSettings, target: str = "") -> list[tuple[str, str | int]]:
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", service_config(settings.client_lb_policy)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        # Fail fast while a peer is down instead of queueing calls for it.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    authority = target_authority(target)
    if authority is not None:
        options.append(("grpc.default_authority", authority))
    return options


def open_channel(
    address: str, settings: ServiceSettings, tls: TlsFiles | None = None
) -> grpc.aio.Channel:
    """A channel to another service (``address``: see ordermesh_platform.targets): mTLS
    with the service's own certificate when ORDERMESH_TLS_* are set (``tls`` overrides
    them), plaintext otherwise."""
    target = grpc_target(address)
    tls = tls or settings.tls_files()
    options = channel_options(settings, target)
    if tls is None:
        return grpc.aio.insecure_channel(
            target, interceptors=client_interceptors(), options=options
        )
    return grpc.aio.secure_channel(
        target, channel_credentials(tls), interceptors=client_interceptors(), options=options
    )
