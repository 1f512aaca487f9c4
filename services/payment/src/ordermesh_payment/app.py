"""Wiring: the payment servicer, its provider and the provider's protections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc
from ordermesh_messaging.consumer import EventConsumer
from ordermesh_messaging.inbox import Inbox
from ordermesh_messaging.relay import relay_workers
from ordermesh_payment.api import POLICY, PaymentApi
from ordermesh_payment.chargebacks import ChargebackHandler
from ordermesh_payment.config import PaymentSettings
from ordermesh_payment.inbound import Inbound, TopicHandler
from ordermesh_payment.psp import ResilientProvider
from ordermesh_payment.risk.decision_log import DecisionLog
from ordermesh_payment.risk.feature_feed import FeatureFeed
from ordermesh_payment.risk.feature_store import FeatureStore
from ordermesh_payment.risk.registry import ModelRegistry, RegistryWatch
from ordermesh_payment.risk.scoring import RiskObserver, RiskScorer, load_model
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.simulated_chargebacks import ChargebackRule, SimulatedChargebacks
from ordermesh_payment.simulated_psp import SimulatedProvider
from ordermesh_payment.store import (
    inbox,
    outbox,
    risk_decisions,
    risk_features,
    risk_models,
    simulated_psp_chargebacks,
)
from ordermesh_payment.usecases import Payments
from ordermesh_platform.db import Transactions
from ordermesh_platform.metrics import (
    PSP_BREAKER_OPEN,
    PSP_LATENCY,
    RISK_DECISIONS,
    RISK_FALLBACKS,
    RISK_FEATURE_FRESHNESS,
    RISK_FEATURE_PSI,
    RISK_SCORE_PSI,
    RISK_SCORING,
    RISK_SHADOW_DECISIONS,
    expose,
)
from ordermesh_platform.resilience import BreakerState, CircuitBreaker
from ordermesh_platform.service import Runtime, ServiceSpec
from ordermesh_platform.workers import background, run_periodically


def build_chargebacks(settings: PaymentSettings, sessions: Transactions) -> SimulatedChargebacks:
    rule = ChargebackRule(settings.psp_chargeback_token_prefix, settings.psp_chargeback_delay_s)
    return SimulatedChargebacks(simulated_psp_chargebacks, outbox, sessions, rule)


def build_provider(
    settings: PaymentSettings, chargebacks: SimulatedChargebacks | None = None
) -> ResilientProvider:
    breaker = CircuitBreaker(settings.psp_breaker_threshold, settings.psp_breaker_open_s)
    expose(PSP_BREAKER_OPEN)

    def observe(operation: str, seconds: float, outcome: str) -> None:
        PSP_LATENCY.labels(operation, outcome).observe(seconds)
        PSP_BREAKER_OPEN.set(0 if breaker.state is BreakerState.CLOSED else 1)

    return ResilientProvider(
        SimulatedProvider(
            settings.psp_latency_s, settings.psp_failure_rate, chargebacks=chargebacks
        ),
        breaker,
        timeout_s=settings.psp_timeout_s,
        attempts=settings.psp_attempts,
        observe=observe,
    )


def build_risk(settings: PaymentSettings, sessions: Transactions) -> RiskScorer | None:
    """The risk scorer, or None when risk scoring is off."""
    if not settings.risk_enabled:
        return None
    definition = RiskSettings().feature_definition()
    observer = RiskObserver(
        scored=lambda source, seconds: RISK_SCORING.labels(source).observe(seconds),
        fallback=lambda reason: RISK_FALLBACKS.labels(reason).inc(),
        decided=lambda variant, decision: RISK_DECISIONS.labels(variant, decision).inc(),
        shadowed=lambda version, declined: RISK_SHADOW_DECISIONS.labels(
            version, "decline" if declined else "approve"
        ).inc(),
    )
    return RiskScorer(
        sessions,
        FeatureStore(risk_features, definition),
        load_model(settings.risk_model_path, definition.schema_hash),
        settings.risk_budget_s,
        observer,
        settings.risk_challenger_share,
        decision_log=DecisionLog(risk_decisions),
        exploration_share=settings.risk_exploration_share,
    )


def _drift_gauges(risk: RiskScorer) -> Callable[[], Awaitable[None]]:
    async def publish() -> None:
        measured = await risk.drift_now()
        if measured is None:
            return
        version, psi = measured
        RISK_SCORE_PSI.clear()  # only the champion in use
        RISK_SCORE_PSI.labels(version).set(psi["score"])
        for feature, value in psi["features"].items():
            RISK_FEATURE_PSI.labels(feature).set(value)

    return publish


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    settings = runtime.settings
    assert isinstance(settings, PaymentSettings)
    risk = build_risk(settings, runtime.sessions)
    chargebacks = (
        build_chargebacks(settings, runtime.sessions)
        if settings.psp_chargeback_token_prefix
        else None
    )
    provider = build_provider(settings, chargebacks)
    payments = Payments(
        runtime.sessions, provider, settings.psp_concurrency, risk, settings.psp_batch_wait_s
    )
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentApi(payments), runtime.server)
    workers = list(relay_workers(runtime, outbox, "payment"))
    # The provider's chargebacks become payment's labels, with risk on or off; with
    # risk on, payment's own events move the risk features.
    handlers: list[TopicHandler] = [ChargebackHandler()]
    if risk is not None:
        expose(RISK_FEATURE_FRESHNESS)
        handlers.append(FeatureFeed(risk.features, RISK_FEATURE_FRESHNESS.observe))
    handler = Inbound(handlers)
    consumer = EventConsumer(
        "payment", handler.topics, handler.handle, runtime.sessions, Inbox(inbox, "payment"),
        settings, handler.wants, handler.wants_type, handler.deduplicated,
    )  # fmt: skip
    workers.append(("event-consumer", consumer.run()))
    workers.append(("inbox-retention", consumer.inbox_sweeper()))
    if chargebacks is not None:
        workers.append(
            (
                "simulated-psp-chargebacks",
                run_periodically(
                    "simulated-psp-chargebacks",
                    chargebacks.report_due,
                    settings.psp_chargeback_poll_s,
                ),
            )
        )
    if risk is not None:
        # The registry's champion, once there is one, replaces the model file;
        # its challengers score in shadow or for their share of customers.
        watch = RegistryWatch(ModelRegistry(risk_models), runtime.sessions, risk)
        workers.append(
            (
                "risk-champion",
                run_periodically("risk-champion", watch.check, settings.risk_registry_poll_s),
            )
        )
    if risk is not None:
        workers.append(
            (
                "risk-drift",
                run_periodically("risk-drift", _drift_gauges(risk), settings.risk_drift_interval_s),
            )
        )
    # Swept even with risk off: the rows of a time risk was on still age out.
    retention = timedelta(days=settings.risk_decision_retention_days)
    workers.append(
        (
            "risk-decision-retention",
            run_periodically(
                "risk-decision-retention",
                lambda: DecisionLog(risk_decisions).sweep(runtime.sessions, retention),
                settings.risk_decision_sweep_interval_s,
            ),
        )
    )
    async with background(*workers):
        try:
            yield
        finally:
            await payments.close()


service = ServiceSpec(
    name="payment",
    settings_type=PaymentSettings,
    grpc_services=(payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,),
    migrations="ordermesh_payment:migrations",
    wire=wire,
    outbox=outbox,
    policy=POLICY,
)
