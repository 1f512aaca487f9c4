"""gRPC channels from one service to another, configured once for every service."""

from __future__ import annotations

import json

import grpc

from ordermesh_platform.settings import ServiceSettings
from ordermesh_platform.telemetry import client_interceptors

# Every ordermesh RPC is idempotent, so a call that never reached a server (UNAVAILABLE)
# is safe to retry; the throttle stops retries from multiplying an outage's load.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
)


def open_channel(address: str, settings: ServiceSettings) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        interceptors=client_interceptors(),
        options=[
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            # Fail fast while a peer is down instead of queueing calls for it.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ],
    )
