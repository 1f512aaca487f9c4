"""Settings read once at start-up from ``ORDERMESH_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ordermesh_platform.auth import TokenSettings
from ordermesh_platform.tls import TlsFiles

MiB = 1024 * 1024


class ServiceSettings(BaseSettings):
    """What every service needs. A service subclasses it to add its own settings."""

    model_config = SettingsConfigDict(env_prefix="ORDERMESH_", extra="ignore")

    grpc_host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 in a pod.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    grpc_reuse_port: bool = Field(
        False,
        description="Let several processes listen on the gRPC port (SO_REUSEPORT; the "
        "kernel hands each new connection to one of them). Off: a port already taken "
        "fails the start instead of being shared with whatever holds it.",
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///.ordermesh/service.db",
        description="SQLAlchemy URL: postgresql+asyncpg://... or sqlite+aiosqlite:///path.",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        description="Connections this process keeps to its database, fixed (no overflow); "
        "a relay's LISTEN takes one more. Size them against the server's "
        "max_connections across every pod (docs/capacity.md).",
    )
    database_timeout_s: float = Field(
        5.0,
        gt=0,
        description="A statement, or a transaction, still unanswered after this long (or "
        "after what is left of the call's deadline, if shorter, but never under 1 s) is cut "
        "off and rolled back, and the call fails with UNAVAILABLE (PostgreSQL).",
    )
    fault_point: str = Field(
        "",
        description="Testing only: SIGKILL this process at the named point, e.g. "
        "after_reserve_stock (order) or after_reserve_commit (inventory). Empty (off).",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port on grpc_host; 0: none."
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    migrate_on_start: bool = Field(True, description="Apply alembic migrations before serving.")
    log_level: str = Field(
        "INFO", description="Least level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    max_message_bytes: int = Field(4 * MiB, ge=1024, description="Largest gRPC message in or out.")
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, time in-flight calls get to finish."
    )
    health_interval_s: float = Field(1.0, gt=0, description="How often the database is probed.")
    health_timeout_s: float = Field(2.0, gt=0, description="A probe slower than this fails.")

    # Overload protection (docs/reliability.md).
    max_in_flight: int = Field(
        256,
        ge=0,
        description="Calls handled at once; past it a call is answered RESOURCE_EXHAUSTED "
        "(ErrorInfo OVERLOADED + RetryInfo) at once instead of queueing. 0: unbounded. "
        "Health and reflection calls are never shed.",
    )
    shed_retry_after_s: float = Field(
        0.2, gt=0, description="Retry delay a shed call advises (RetryInfo, gRPC pushback)."
    )
    # Spreading calls over replicas (docs/deploy.md, "How traffic reaches new pods").
    client_lb_policy: Literal["round_robin", "pick_first"] = Field(
        "round_robin",
        description="How a channel to another service chooses among the addresses its "
        "target resolves to: round_robin connects to every replica and spreads calls "
        "over them; pick_first sends everything over one connection.",
    )
    max_connection_age_s: float = Field(
        30.0,
        ge=0,
        description="A client connection is closed (GOAWAY, after in-flight calls) once "
        "it is this old, give or take 10% (gRPC's jitter): the client reconnects and "
        "resolves its target again, so replicas started since then get calls. 0: never.",
    )
    max_connection_age_grace_s: float = Field(
        30.0,
        ge=0,
        description="How long calls in flight on an aged connection may still run "
        "before it is cut (the default covers the clients' 30 s call cap; a longer "
        "WatchOrder stream ends UNAVAILABLE and is watched again).",
    )
    instance_id: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="Set by `ordermesh up` for its own children: health also answers "
        "SERVING for the name ordermesh.instance.<id>, so `up` can tell its servers from "
        "another program on the same port. Empty: none.",
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="A plaintext port serving grpc.health.v1 only, for probes that cannot "
        "do mTLS (the kubelet's gRPC probes). 0: none.",
    )

    # Transport security (docs/security.md): all three, or none.
    tls_cert_file: str = Field("", description="PEM certificate (server and client use).")
    tls_key_file: str = Field("", description="Its PEM private key.")
    tls_ca_file: str = Field(
        "", description="PEM CA bundle: peers' certificates must chain to it (mTLS)."
    )

    # Caller authentication and authorization (docs/security.md).
    auth_enabled: bool = Field(
        False, description="Require a bearer JWT or an ordermesh service certificate."
    )
    # Where the keys that sign tokens come from: one of these four, or none (then only
    # service certificates authenticate).
    auth_jwt_public_key_file: str = Field("", description="PEM public key that signs tokens.")
    auth_jwks_file: str = Field("", description="JWKS file (keys chosen by kid).")
    auth_jwks_url: str = Field(
        "", description="URL of the identity provider's JWKS (keys chosen by kid)."
    )
    auth_oidc_issuer: str = Field(
        "",
        description="OIDC issuer URL: its JWKS is found at "
        "<issuer>/.well-known/openid-configuration, and tokens must carry it as iss.",
    )
    auth_jwks_cache_s: float = Field(
        300.0, gt=0, description="How long keys fetched from a URL are used before a refetch."
    )
    auth_jwks_min_refresh_interval_s: float = Field(
        10.0,
        ge=0,
        description="Least time between two fetches of the keys, whatever triggers them "
        "(an unknown kid, an expired cache).",
    )
    auth_jwks_timeout_s: float = Field(
        5.0, gt=0, description="A fetch of the keys (discovery included) slower than this fails."
    )
    auth_jwt_audience: str = Field(
        "ordermesh", description="Required `aud` of tokens; empty: not checked."
    )
    auth_jwt_issuer: str = Field(
        "",
        description="Required `iss` of tokens; empty: the OIDC issuer, or not checked.",
    )
    auth_jwt_algorithms: str = Field(
        "RS256,PS256,ES256,EdDSA", description="Accepted signature algorithms, comma-separated."
    )
    auth_jwt_leeway_s: float = Field(30.0, ge=0, description="Clock skew allowed on exp/nbf.")

    @model_validator(mode="after")
    def _tls_all_or_nothing(self) -> ServiceSettings:
        self.tls_files()  # raises ValueError when only some are set
        return self

    @model_validator(mode="after")
    def _one_source_of_token_keys(self) -> ServiceSettings:
        self.token_settings()  # raises ValueError when several are set
        return self

    def tls_files(self) -> TlsFiles | None:
        return TlsFiles.from_paths(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    def token_settings(self) -> TokenSettings:
        return TokenSettings(
            public_key_file=self.auth_jwt_public_key_file,
            jwks_file=self.auth_jwks_file,
            jwks_url=self.auth_jwks_url,
            oidc_issuer=self.auth_oidc_issuer,
            audience=self.auth_jwt_audience,
            issuer=self.auth_jwt_issuer,
            algorithms=tuple(a.strip() for a in self.auth_jwt_algorithms.split(",") if a.strip()),
            leeway_s=self.auth_jwt_leeway_s,
            jwks_cache_s=self.auth_jwks_cache_s,
            jwks_min_refresh_interval_s=self.auth_jwks_min_refresh_interval_s,
            jwks_timeout_s=self.auth_jwks_timeout_s,
        )
