"""Order settings (``ORDERMESH_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from ordermesh_platform.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    grpc_port: int = 50051
    database_url: str = "sqlite+aiosqlite:///.ordermesh/order.db"
    inventory_addr: str = Field("127.0.0.1:50052", description="host:port of inventory-service")
    payment_addr: str = Field("127.0.0.1:50053", description="host:port of payment-service")
