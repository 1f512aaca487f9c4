"""Settings read once at start-up from ``ORDERMESH_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class ServiceSettings(BaseSettings):
    """What every service needs. A service subclasses it to add its own settings."""

    model_config = SettingsConfigDict(env_prefix="ORDERMESH_", extra="ignore")

    grpc_host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 in a pod.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    database_url: str = Field(
        "sqlite+aiosqlite:///.ordermesh/service.db",
        description="SQLAlchemy URL: postgresql+asyncpg://... or sqlite+aiosqlite:///path.",
    )
    database_pool_size: int = Field(10, ge=1)
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port on grpc_host; 0: none."
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    migrate_on_start: bool = Field(True, description="Apply alembic migrations before serving.")
    log_level: str = "INFO"
    max_message_bytes: int = Field(4 * MiB, ge=1024, description="Largest gRPC message in or out.")
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, time in-flight calls get to finish."
    )
    health_interval_s: float = Field(1.0, gt=0, description="How often the database is probed.")
    health_timeout_s: float = Field(2.0, gt=0, description="A probe slower than this fails.")
