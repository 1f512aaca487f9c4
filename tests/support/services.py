"""Run a real service in the test's event loop: real gRPC server, real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ordermesh_platform.server import RunningService
from ordermesh_platform.service import ServiceSpec


@asynccontextmanager
async def running_service(
    spec: ServiceSpec, database_url: str, **settings: object
) -> AsyncIterator[RunningService]:
    config = spec.settings_type.model_validate(
        {"grpc_port": 0, "database_url": database_url, "health_interval_s": 0.2, **settings}
    )
    service = RunningService(spec, config)
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # raises what made the service fail to start
    if waiter not in done:
        raise TimeoutError(f"{spec.name} did not start")
    try:
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, timeout=30)
