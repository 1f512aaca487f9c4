"""Payment settings (``ORDERMESH_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from ordermesh_messaging.settings import ConsumerSettings, RelaySettings


class PaymentSettings(RelaySettings, ConsumerSettings):
    grpc_port: int = 50053
    database_url: str = "sqlite+aiosqlite:///.ordermesh/payment.db"
    psp_latency_s: float = Field(0.0, ge=0, description="Simulated provider: added latency.")
    psp_failure_rate: float = Field(
        0.0, ge=0, le=1, description="Simulated provider: share of calls failing transiently."
    )
    psp_timeout_s: float = Field(2.0, gt=0, description="One provider call may take this long.")
    psp_attempts: int = Field(
        3, ge=1, description="Provider calls per operation, retries included."
    )
    psp_breaker_threshold: int = Field(
        10, ge=1, description="Consecutive transient failures that open the circuit."
    )
    psp_breaker_open_s: float = Field(5.0, gt=0, description="How long the circuit stays open.")
    psp_chargeback_token_prefix: str = Field(
        "tok_fraud",
        description="Simulated provider: authorizations of tokens starting with this are "
        "charged back (docs/risk.md); empty: none.",
    )
    psp_chargeback_delay_s: float = Field(
        60.0, ge=0, description="Simulated provider: how long after the authorization."
    )
    psp_chargeback_poll_s: float = Field(
        1.0, gt=0, description="Simulated provider: how often due chargebacks are reported."
    )
    psp_batch_wait_s: float = Field(
        1.0,
        gt=0,
        description="How long a batch waits for its provider calls. A call still out then "
        "answers its order UNAVAILABLE (the caller retries) and goes on; what it brings is "
        "recorded when it comes. One slow card never holds up the others.",
    )
    psp_concurrency: int = Field(
        64, ge=1, description="Provider calls in flight at once, batches and single calls alike."
    )
    risk_enabled: bool = Field(
        False,
        description="Score each authorization batch before the provider is asked "
        "(docs/risk.md). Off: the authorization path does no risk work at all.",
    )
    risk_model_path: str = Field(
        "",
        description="A model artifact (ordermesh risk train); empty or unusable: rules only.",
    )
    risk_budget_s: float = Field(
        0.02, gt=0, description="Time the model gets per batch; past it the rules decide."
    )
    risk_registry_poll_s: float = Field(
        5.0, gt=0, description="How often the model registry's champion is checked."
    )
    risk_challenger_share: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Share of customers (by a stable hash of the id) whose payments the "
        "newest challenger decides instead of the champion (A/B); 0: challengers only shadow.",
    )
    risk_drift_interval_s: float = Field(
        30.0, gt=0, description="How often the PSI gauges of the champion are recomputed."
    )
    risk_exploration_share: float = Field(
        0.0,
        ge=0,
        le=0.1,
        description="Share of would-be model declines approved at random, with the "
        "propensity logged, to measure blocked traffic (e.g. 0.005). 0: none.",
    )
    risk_decision_retention_days: float = Field(
        120.0,
        gt=0,
        description="Risk decisions older than this are deleted from the decision log. "
        "Keep it well past the chargeback delay (up to 45 days): a decision's label "
        "must mature before report or retraining can use it.",
    )
    risk_decision_sweep_interval_s: float = Field(
        3600.0, gt=0, description="How often the decision log's retention sweep runs."
    )
