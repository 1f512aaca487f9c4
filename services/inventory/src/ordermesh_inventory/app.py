"""Wiring: the inventory servicer onto the shared bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh_inventory.api import InventoryApi
from ordermesh_inventory.config import InventorySettings
from ordermesh_inventory.usecases import Inventory
from ordermesh_platform.service import Runtime, ServiceSpec


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
        InventoryApi(Inventory(runtime.sessions)),  # type: ignore[abstract]
        runtime.server,
    )
    yield


service = ServiceSpec(
    name="inventory",
    settings_type=InventorySettings,
    grpc_services=(inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,),
    migrations="ordermesh_inventory:migrations",
    wire=wire,
)
