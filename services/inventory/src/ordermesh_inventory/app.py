"""Wiring: the inventory servicer onto the shared bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh_inventory.api import POLICY, InventoryApi
from ordermesh_inventory.config import InventorySettings
from ordermesh_inventory.store import outbox
from ordermesh_inventory.usecases import Inventory
from ordermesh_messaging.relay import relay_workers
from ordermesh_platform.service import Runtime, ServiceSpec
from ordermesh_platform.workers import background, run_periodically


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    settings = runtime.settings
    assert isinstance(settings, InventorySettings)
    inventory = Inventory(runtime.sessions, settings.reservation_ttl_s, settings.fault_point)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
        InventoryApi(inventory), runtime.server
    )
    sweeper = run_periodically(
        "reservation-sweeper",
        inventory.release_expired,
        settings.sweep_interval_s,
        again=inventory.sweep_behind,
    )
    async with background(
        ("reservation-sweeper", sweeper), *relay_workers(runtime, outbox, "inventory")
    ):
        yield


service = ServiceSpec(
    name="inventory",
    settings_type=InventorySettings,
    grpc_services=(inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,),
    migrations="ordermesh_inventory:migrations",
    wire=wire,
    outbox=outbox,
    policy=POLICY,
)
