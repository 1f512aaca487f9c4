"""Inventory settings (``ORDERMESH_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from ordermesh_messaging.settings import RelaySettings


class InventorySettings(RelaySettings):
    grpc_port: int = 50052
    database_url: str = "sqlite+aiosqlite:///.ordermesh/inventory.db"
    reservation_ttl_s: float = Field(900.0, gt=0, description="Default life of a reservation.")
    sweep_interval_s: float = Field(5.0, gt=0, description="How often expired ones are released.")
