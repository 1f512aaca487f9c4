"""A grpc.health.v1 client: what `ordermesh health` and `ordermesh up` ask each service."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ordermesh_platform.tls import TlsFiles, channel_credentials

STATUS_NAMES = {
    health_pb2.HealthCheckResponse.UNKNOWN: "UNKNOWN",
    health_pb2.HealthCheckResponse.SERVING: "SERVING",
    health_pb2.HealthCheckResponse.NOT_SERVING: "NOT_SERVING",
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: "SERVICE_UNKNOWN",
}


def _channel(address: str, tls: TlsFiles | None, server_name: str) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)


async def check_health(
    address: str,
    service: str = "",
    timeout_s: float = 1.0,
    tls: TlsFiles | None = None,
    server_name: str = "",
) -> str:
    """SERVING, NOT_SERVING, ... or DOWN when the server does not answer (or refuses the
    connection, as an mTLS server does a plaintext client). With ``tls`` the check runs
    over mTLS; ``server_name`` is the name to verify the server's certificate against
    when the address is not one of its names."""
    async with _channel(address, tls, server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            # The typeshed stub declares no methods on HealthStub.
            reply = await stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return "DOWN"
    return STATUS_NAMES.get(reply.status, "UNKNOWN")
