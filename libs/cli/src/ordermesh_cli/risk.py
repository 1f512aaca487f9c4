"""``ordermesh risk``: the offline risk tooling of payment-service (docs/risk.md).

The commands live here; what they do lives in payment's ``risk`` package, found through
the ``ordermesh.risk`` entry point, so this library never imports a service."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Protocol, cast

import typer


class RiskTools(Protocol):
    def simulate(
        self,
        out: Path,
        orders: int,
        seed: int,
        days: int,
        fraud_share: float,
        chargeback_delay_days: tuple[float, float],
    ) -> dict[str, object]: ...


def load_risk_tools() -> RiskTools:
    for entry in entry_points(group="ordermesh.risk", name="tools"):
        return cast(RiskTools, entry.load())
    raise LookupError("no risk tools installed (the ordermesh.risk entry point of payment)")


risk_app = typer.Typer(
    help="Payment risk: simulate data, train and evaluate models.", no_args_is_help=True
)


def _print(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@risk_app.command()
def simulate(
    out: Annotated[
        Path, typer.Option(help="folder for events.jsonl, truth.jsonl, summary.json")
    ] = (Path(".ordermesh/risk/sim")),
    orders: Annotated[int, typer.Option(min=1, help="payment attempts to generate")] = 50_000,
    seed: Annotated[int, typer.Option(help="same seed, same log")] = 7,
    days: Annotated[int, typer.Option(min=3, help="days the orders spread over")] = 60,
    fraud_share: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="share of orders that are fraud")
    ] = 0.015,
    chargeback_min_days: Annotated[float, typer.Option(min=0.0)] = 7.0,
    chargeback_max_days: Annotated[float, typer.Option(min=0.0)] = 45.0,
) -> None:
    """Generate customers, devices, tokens and a time-ordered log of payments with fraud
    patterns, and the chargebacks that label the fraud after a delay."""
    if chargeback_max_days < chargeback_min_days:
        raise typer.BadParameter("--chargeback-max-days is below --chargeback-min-days")
    summary = load_risk_tools().simulate(
        out, orders, seed, days, fraud_share, (chargeback_min_days, chargeback_max_days)
    )
    _print(summary)
