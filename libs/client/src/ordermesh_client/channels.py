"""Channels to ordermesh's services, configured one way for every caller (the services
among themselves, the CLI, an application): gRPC's own retry policy with its budget, a
default deadline, round-robin over every replica, mutual TLS, and a bearer token."""

from __future__ import annotations

import json

import grpc

from ordermesh_client.targets import grpc_target, target_authority
from ordermesh_client.tls import TlsFiles, channel_credentials

Metadata = tuple[tuple[str, str], ...]
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

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


def channel_options(
    target: str,
    lb_policy: str = "round_robin",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[tuple[str, str | int]]:
    """The options of a channel to ``target`` (a gRPC target: see ordermesh_client.targets)."""
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", service_config(lb_policy)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
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
    address: str,
    tls: TlsFiles | None = None,
    token: str | None = None,
    *,
    lb_policy: str = "round_robin",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    interceptors: list[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A channel to ``address`` (``host:port``, a comma-separated list of replicas, or
    any gRPC target): mTLS presenting ``tls`` when given, plaintext otherwise.
    ``token``, a bearer token sent with every call, needs TLS: over plaintext, pass
    :func:`bearer` as a call's metadata instead."""
    target = grpc_target(address)
    options = channel_options(target, lb_policy, max_message_bytes)
    if tls is None:
        if token is not None:
            raise ValueError("a channel's token travels only over TLS; use bearer() per call")
        return grpc.aio.insecure_channel(target, interceptors=interceptors, options=options)
    credentials = channel_credentials(tls)
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors, options=options)


def bearer(token: str) -> Metadata:
    """A call's metadata carrying ``token`` (a JWT the services accept)."""
    return (("authorization", f"Bearer {token}"),)
