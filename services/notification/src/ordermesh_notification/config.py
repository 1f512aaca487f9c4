"""Notification settings (``ORDERMESH_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from ordermesh_messaging.settings import ConsumerSettings

# Only for development: a receiver can verify signatures, but anyone can forge them.
DEV_WEBHOOK_SECRET = "ordermesh-dev-webhook-secret"


class NotificationSettings(ConsumerSettings):
    grpc_port: int = 50054
    database_url: str = "sqlite+aiosqlite:///.ordermesh/notification.db"

    smtp_host: str = Field("127.0.0.1", description="SMTP server for CHANNEL_EMAIL.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP server port.")
    smtp_from: str = Field("ordermesh@localhost", description="From address of the e-mails.")
    smtp_username: str | None = Field(None, description="SMTP AUTH user; unset: no AUTH.")
    smtp_password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_timeout_s: float = Field(10.0, gt=0, description="One e-mail may take this long.")

    webhook_secret: SecretStr = Field(
        SecretStr(DEV_WEBHOOK_SECRET),
        description="Shared secret of the X-Ordermesh-Signature HMAC-SHA256. Set it: the "
        "default is a public development value (a warning is logged at start).",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="One webhook POST may take this long.")

    delivery_max_attempts: int = Field(
        8, ge=1, description="Tries per delivery, the first included; then FAILED."
    )
    delivery_backoff_base_s: float = Field(
        0.5, gt=0, description="Wait after the first failed try; doubles after each next one."
    )
    delivery_backoff_max_s: float = Field(
        300.0, gt=0, description="Longest wait between two tries."
    )
    delivery_interval_s: float = Field(
        0.5,
        gt=0,
        description="How long the worker waits after a pass that found less than a full "
        "batch due; while a pass finds a full batch, the next starts at once.",
    )
    delivery_batch_size: int = Field(
        50, ge=1, description="Deliveries claimed (and sent side by side) per pass."
    )
    delivery_pass_wait_s: float = Field(
        1.0,
        gt=0,
        description="How long a pass waits for its sends: a send still out then goes on "
        "and is recorded when it ends, so one slow receiver holds up no other delivery.",
    )
    delivery_lease_s: float = Field(
        60.0,
        gt=0,
        description="A worker's claim on the deliveries it is sending; after it another "
        "replica may take them over. Must exceed the SMTP and webhook timeouts.",
    )

    delivery_retention_days: float = Field(
        30.0,
        ge=0,
        description="Deliveries SENT or FAILED that were created longer ago than this "
        "are deleted, and ListNotifications no longer shows them; PENDING ones are never "
        "deleted. 0: kept for ever.",
    )
    delivery_sweep_interval_s: float = Field(
        3600.0, gt=0, description="How often the deliveries' retention sweep runs."
    )

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> NotificationSettings:
        longest = max(self.smtp_timeout_s, self.webhook_timeout_s)
        if self.delivery_lease_s <= longest:
            raise ValueError(
                f"delivery_lease_s ({self.delivery_lease_s}) must exceed the longest send "
                f"timeout ({longest}): a claim must not expire while its send may still succeed"
            )
        return self
