"""The offline risk tooling, as the ``ordermesh risk`` commands call it (found through
the ``ordermesh.risk`` entry point, so the CLI never imports this service). Training
and evaluation import the ``training`` extra's libraries only when called."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import SimulationSettings
from ordermesh_payment.risk.simulate import simulate as _simulate


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
    events: Path,
    out: Path,
    since: datetime | None,
    until: datetime | None,
    maturity_days: float,
) -> list[dict[str, Any]]:
    from ordermesh_payment.risk.metrics import Costs
    from ordermesh_payment.risk.training import TrainingSettings, train_to_folder

    risk = RiskSettings()
    return train_to_folder(
        events,
        out,
        risk.feature_definition(),
        Costs(risk.margin_rate, risk.chargeback_fee_minor),
        TrainingSettings(since=since, until=until, maturity_days=maturity_days),
    )


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
    )
