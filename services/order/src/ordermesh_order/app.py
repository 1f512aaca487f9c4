"""Wiring: the order servicer onto the shared bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from ordermesh_order.api import OrderApi
from ordermesh_order.config import OrderSettings
from ordermesh_platform.service import Runtime, ServiceSpec


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderApi(), runtime.server)  # type: ignore[abstract]
    yield


service = ServiceSpec(
    name="order",
    settings_type=OrderSettings,
    grpc_services=(order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,),
    migrations="ordermesh_order:migrations",
    wire=wire,
)
