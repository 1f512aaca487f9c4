"""Payment settings (``ORDERMESH_*`` environment variables)."""

from __future__ import annotations

from ordermesh_platform.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    grpc_port: int = 50053
    database_url: str = "sqlite+aiosqlite:///.ordermesh/payment.db"
