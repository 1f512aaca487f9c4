"""grpc.health.v1 that follows the database: NOT_SERVING while it is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.db import ping
from ordermesh_platform.logs import get_logger

# Answers SERVING for as long as the process serves, whatever the database does: what a
# liveness probe should ask, so that a database outage never restarts every pod.
LIVENESS = "ordermesh.liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

log = get_logger(__name__)


def instance_health_name(instance_id: str) -> str:
    """The health name a server started with ORDERMESH_INSTANCE_ID answers SERVING for
    as long as it serves (`ordermesh up` tells its own servers apart with it)."""
    return f"ordermesh.instance.{instance_id}"


class DatabaseHealth:
    """Probes the database every interval and sets the health of the overall server ("")
    and of each gRPC service it hosts."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        engine: AsyncEngine,
        service_names: Sequence[str],
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._servicer = servicer
        self._engine = engine
        self._names = ["", *service_names]
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self.healthy: bool | None = None

    async def start(self) -> None:
        await self._servicer.set(LIVENESS, SERVING)
        await self.probe_once()

    async def probe_once(self) -> bool:
        ok = await ping(self._engine, self._timeout_s)
        if ok != self.healthy:
            log.info("database health changed", healthy=ok)
            self.healthy = ok
            for name in self._names:
                await self._servicer.set(name, SERVING if ok else NOT_SERVING)
        return ok

    async def run(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self._interval_s)
