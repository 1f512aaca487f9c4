"""A grpc.health.v1 client: what `ordermesh health` and `ordermesh up` ask each service."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STATUS_NAMES = {
    health_pb2.HealthCheckResponse.UNKNOWN: "UNKNOWN",
    health_pb2.HealthCheckResponse.SERVING: "SERVING",
    health_pb2.HealthCheckResponse.NOT_SERVING: "NOT_SERVING",
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: "SERVICE_UNKNOWN",
}


async def check_health(address: str, service: str = "", timeout_s: float = 1.0) -> str:
    """SERVING, NOT_SERVING, ... or DOWN when the server does not answer."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            # The typeshed stub declares no methods on HealthStub.
            reply = await stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return "DOWN"
    return STATUS_NAMES.get(reply.status, "UNKNOWN")
