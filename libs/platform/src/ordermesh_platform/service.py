"""What a service hands to the shared bootstrap: its name, settings, migrations and wiring."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import grpc
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_platform.db import Transactions
from ordermesh_platform.policy import Policy
from ordermesh_platform.settings import ServiceSettings


@dataclass(frozen=True)
class Runtime:
    """Everything the bootstrap built that a service's wiring may use."""

    settings: ServiceSettings
    server: grpc.aio.Server
    engine: AsyncEngine
    sessions: Transactions


Wiring = Callable[[Runtime], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class ServiceSpec:
    """One service, as the bootstrap and the CLI see it.

    ``wire`` registers the servicers on ``runtime.server`` and runs the service's
    background workers for as long as its context is open.
    """

    name: str
    settings_type: type[ServiceSettings]
    grpc_services: tuple[str, ...]
    migrations: str
    wire: Wiring
    # The service's outbox table, when it publishes events (for `ordermesh relay`).
    outbox: Table | None = None
    # Who may call which RPC, applied while ORDERMESH_AUTH_ENABLED is on. Without one,
    # every RPC but health and reflection is refused then.
    policy: Policy | None = None
