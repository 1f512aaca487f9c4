"""Notification settings (``ORDERMESH_*`` environment variables)."""

from __future__ import annotations

from ordermesh_platform.settings import ServiceSettings


class NotificationSettings(ServiceSettings):
    grpc_port: int = 50054
    database_url: str = "sqlite+aiosqlite:///.ordermesh/notification.db"
