"""The offline risk tooling, as the ``ordermesh risk`` commands call it (found through
the ``ordermesh.risk`` entry point, so the CLI never imports this service). Training
and evaluation import the ``training`` extra's libraries only when called."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_payment.risk.events import Event
from ordermesh_payment.risk.models import Artifact, load_artifact
from ordermesh_payment.risk.registry import ModelRegistry
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import SimulationSettings
from ordermesh_payment.risk.simulate import simulate as _simulate
from ordermesh_platform.errors import FailedPrecondition

T = TypeVar("T")


def simulate(
    out: Path,
    orders: int,
    seed: int,
    days: int,
    fraud_share: float,
    chargeback_delay_days: tuple[float, float],
) -> dict[str, object]:
    settings = SimulationSettings(
        orders=orders,
        seed=seed,
        days=days,
        fraud_share=fraud_share,
        chargeback_delay_days=chargeback_delay_days,
    )
    return _simulate(settings, out)


def train(
    events: Path | None,
    out: Path,
    since: datetime | None,
    until: datetime | None,
    maturity_days: float,
    database_url: str | None = None,
) -> list[dict[str, Any]]:
    """Train from a log folder's events.jsonl, or, with ``database_url``, from payment's
    own records (its decision log and the chargebacks it received)."""
    from ordermesh_payment.risk.metrics import Costs
    from ordermesh_payment.risk.training import TrainingSettings, load_log, train_to_folder

    if database_url is not None:
        logged = recorded(database_url)
    elif events is not None:
        logged = load_log(events)
    else:
        raise ValueError("train needs --events or --database-url")
    risk = RiskSettings()
    return train_to_folder(
        logged,
        out,
        risk.feature_definition(),
        Costs(risk.margin_rate, risk.chargeback_fee_minor),
        TrainingSettings(
            since=since,
            until=until,
            maturity_days=maturity_days,
            min_segment_genuine=risk.min_segment_genuine,
        ),
    )


def recorded(database_url: str | None) -> list[Event]:
    """Payment's records as the event log (risk/recorded.py)."""
    from ordermesh_payment.risk.recorded import recorded_events
    from ordermesh_payment.store import risk_chargebacks, risk_decisions

    async def use(_: ModelRegistry, conn: AsyncConnection) -> list[Event]:
        return await recorded_events(conn, risk_decisions, risk_chargebacks)

    return asyncio.run(_in_registry(database_url, use))


def evaluate(
    events: Path,
    models: Path,
    out: Path,
    since: datetime | None,
    until: datetime | None,
    maturity_days: float,
) -> list[dict[str, Any]]:
    from ordermesh_payment.risk.evaluation import evaluate_folder
    from ordermesh_payment.risk.metrics import Costs
    from ordermesh_payment.risk.training import TrainingSettings

    risk = RiskSettings()
    return evaluate_folder(
        events,
        models,
        out,
        risk.feature_definition(),
        Costs(risk.margin_rate, risk.chargeback_fee_minor),
        TrainingSettings(since=since, until=until, maturity_days=maturity_days),
        risk.min_segment_genuine,
    )


async def _in_registry(
    database_url: str | None, use: Callable[[ModelRegistry, AsyncConnection], Awaitable[T]]
) -> T:
    """Run ``use`` in one transaction on payment's database (migrated first)."""
    from ordermesh_payment.app import service
    from ordermesh_payment.config import PaymentSettings
    from ordermesh_payment.store import risk_models
    from ordermesh_platform.db import create_engine
    from ordermesh_platform.migrations import upgrade_to_head

    url = database_url or PaymentSettings().database_url
    await upgrade_to_head(service.migrations, url, service.name)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            return await use(ModelRegistry(risk_models), conn)
    finally:
        await engine.dispose()


def with_threshold(model: Path, threshold: float, out: Path) -> dict[str, object]:
    """The artifact at ``model`` with another decline threshold, saved at ``out``: a new
    version (the threshold is part of what decides). Above 1 it never declines: it
    scores and logs every payment, as the bench uses it to measure scoring alone."""
    artifact = replace(load_artifact(model), threshold=threshold)
    artifact.save(out)
    return {"version": artifact.version, "threshold": threshold, "path": str(out)}


def register(database_url: str | None, model: Path, champion: bool) -> dict[str, object]:
    """Add an artifact to the registry as a challenger (and make it champion); the
    oldest challengers beyond ``ORDERMESH_RISK_MAX_CHALLENGERS`` are retired."""
    risk = RiskSettings()
    artifact = load_artifact(model, risk.feature_definition().schema_hash)

    async def use(registry: ModelRegistry, conn: AsyncConnection) -> dict[str, object]:
        added = await registry.register(conn, artifact)
        replaced = await registry.promote(conn, artifact.version) if champion else None
        retired = await registry.retire_oldest_challengers(conn, risk.max_challengers)
        return {"version": artifact.version, "added": added, "champion": champion,
                "replaced": replaced, "retired": retired}  # fmt: skip

    return asyncio.run(_in_registry(database_url, use))


def promote(
    database_url: str | None, version: str, events: Path | None, maturity_days: float
) -> dict[str, object]:
    """Make ``version`` the champion. With ``events``, only past the gate: it must
    beat the champion's cost on that log's holdout with confidence, and spread its
    false declines evenly enough over the segments (docs/risk.md)."""

    async def use(registry: ModelRegistry, conn: AsyncConnection) -> dict[str, object]:
        checked: dict[str, object] = {}
        if events is not None:
            challenger = await registry.artifact(conn, version)
            current = await registry.champion_version(conn)
            champion = None if current is None else await registry.artifact(conn, current)
            checked = _gate(champion, challenger, events, maturity_days)
        replaced = await registry.promote(conn, version)
        return {"champion": version, "replaced": replaced, **checked}

    return asyncio.run(_in_registry(database_url, use))


def _gate(
    champion: Artifact | None, challenger: Artifact, events: Path, maturity_days: float
) -> dict[str, object]:
    from ordermesh_payment.risk.gate import GateSettings, check_promotion
    from ordermesh_payment.risk.metrics import Costs
    from ordermesh_payment.risk.training import (
        TrainingSettings,
        load_log,
        time_split,
        training_data,
    )

    risk = RiskSettings()
    settings = TrainingSettings(maturity_days=maturity_days)
    data, _ = training_data(load_log(events), risk.feature_definition(), settings)
    holdout = time_split(data, settings.validation_share, settings.holdout_share).holdout
    report = check_promotion(
        champion,
        challenger,
        holdout,
        Costs(risk.margin_rate, risk.chargeback_fee_minor),
        GateSettings(
            max_false_decline_ratio=risk.max_false_decline_ratio,
            min_segment_genuine=risk.min_segment_genuine,
        ),
    )
    if not report.accepted:
        raise FailedPrecondition(
            ErrorReason.PROMOTION_REFUSED,
            f"{challenger.version} refused: " + "; ".join(report.reasons),
        )
    return {
        "cost_saving_minor": report.cost_saving_minor,
        "saving_interval_minor": list(report.saving_interval),
        "false_decline_ratio": report.false_decline_ratio,
    }


def rollback(database_url: str | None) -> dict[str, object]:
    async def use(registry: ModelRegistry, conn: AsyncConnection) -> dict[str, object]:
        rolled_back, restored = await registry.rollback(conn)
        return {"rolled_back": rolled_back, "champion": restored}

    return asyncio.run(_in_registry(database_url, use))


def retire(database_url: str | None, version: str) -> dict[str, object]:
    """Take a challenger out of shadowing; the champion cannot be retired."""

    async def use(registry: ModelRegistry, conn: AsyncConnection) -> dict[str, object]:
        was = await registry.retire(conn, version)
        return {"retired": version, "was": was}

    return asyncio.run(_in_registry(database_url, use))


def models(database_url: str | None) -> list[dict[str, object]]:
    async def use(registry: ModelRegistry, conn: AsyncConnection) -> list[dict[str, object]]:
        return [asdict(m) for m in await registry.models(conn)]

    return asyncio.run(_in_registry(database_url, use))


def skew(database_url: str | None) -> dict[str, object]:
    """Compare the features payment-service scored with a replay of its decision log."""
    from ordermesh_payment.risk.decision_log import DecisionLog
    from ordermesh_payment.risk.decision_log import skew as measure
    from ordermesh_payment.store import risk_decisions

    async def use(_: ModelRegistry, conn: AsyncConnection) -> dict[str, object]:
        logged = await DecisionLog(risk_decisions).entries(conn)
        report = measure(logged, RiskSettings().feature_definition())
        return asdict(report)

    return asyncio.run(_in_registry(database_url, use))


def _chargeback_file(chargebacks: Path) -> set[str]:
    """A file of order ids, one a line, or JSON lines with an "order_id" (the
    simulator's events.jsonl among them: only its chargebacks carry no "declined")."""
    import json

    fraud = set()
    for line in chargebacks.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith("{"):
            fraud.add(line.strip())
            continue
        fields = json.loads(line)
        if fields.get("type", "chargeback") == "chargeback":
            fraud.add(fields["order_id"])
    return fraud


def report(
    database_url: str | None, chargebacks: Path | None, maturity_days: float, out: Path
) -> list[dict[str, object]]:
    """Each variant's precision, recall and cost, blocked traffic included, and its
    per-segment false-decline and approval rates, from the decision log and the
    chargebacks (payment's own labels, or a file: see ``_chargeback_file``), over
    decisions old enough for their chargebacks to have arrived. Draws the segments
    into ``out``."""
    import time

    from ordermesh_payment.risk.decision_log import LoggedDecision, logged_decisions
    from ordermesh_payment.risk.evaluation import plot_segments
    from ordermesh_payment.risk.fairness import fairness_report
    from ordermesh_payment.risk.labels import ChargebackLabels
    from ordermesh_payment.risk.metrics import Costs
    from ordermesh_payment.risk.report import report as estimate
    from ordermesh_payment.risk.report import variant_segment_rates
    from ordermesh_payment.store import risk_chargebacks, risk_decisions

    matured_before = time.time() * 1000 - maturity_days * 86_400_000
    risk = RiskSettings()
    names = risk.feature_definition().names

    async def use(_: ModelRegistry, conn: AsyncConnection) -> tuple[list[LoggedDecision], set[str]]:
        decisions = await logged_decisions(conn, risk_decisions, names)
        if chargebacks is not None:
            return decisions, _chargeback_file(chargebacks)
        labels = await ChargebackLabels(risk_chargebacks).chargebacks(conn)
        return decisions, {c.order_id for c in labels}

    decisions, fraud = asyncio.run(_in_registry(database_url, use))
    matured = [d for d in decisions if d.decided_ms <= matured_before]
    segments = variant_segment_rates(matured, fraud, risk.min_segment_genuine)
    out.mkdir(parents=True, exist_ok=True)
    plot_segments(segments, out / "segments.png")
    costs = Costs(risk.margin_rate, risk.chargeback_fee_minor)
    return [
        {**asdict(r), "fairness": fairness_report(segments[r.variant], risk.min_segment_genuine)}
        for r in estimate(matured, fraud, costs)
    ]
