"""``ordermesh risk``: the offline risk tooling of payment-service (docs/risk.md).

The commands live here; what they do lives in payment's ``risk`` package, found through
the ``ordermesh.risk`` entry point, so this library never imports a service."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Protocol, cast

import typer

from ordermesh_platform.errors import ServiceError


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

    def train(
        self,
        events: Path | None,
        out: Path,
        since: datetime | None,
        until: datetime | None,
        maturity_days: float,
        database_url: str | None = None,
    ) -> list[dict[str, Any]]: ...

    def evaluate(
        self,
        events: Path,
        models: Path,
        out: Path,
        since: datetime | None,
        until: datetime | None,
        maturity_days: float,
    ) -> list[dict[str, Any]]: ...

    def with_threshold(self, model: Path, threshold: float, out: Path) -> dict[str, object]: ...

    def register(
        self, database_url: str | None, model: Path, champion: bool
    ) -> dict[str, object]: ...

    def promote(
        self, database_url: str | None, version: str, events: Path | None, maturity_days: float
    ) -> dict[str, object]: ...

    def rollback(self, database_url: str | None) -> dict[str, object]: ...

    def retire(self, database_url: str | None, version: str) -> dict[str, object]: ...

    def models(self, database_url: str | None) -> list[dict[str, object]]: ...

    def skew(self, database_url: str | None) -> dict[str, object]: ...

    def report(
        self, database_url: str | None, chargebacks: Path | None, maturity_days: float, out: Path
    ) -> list[dict[str, object]]: ...


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


EventsOption = Annotated[
    Path, typer.Option(help="folder holding events.jsonl (ordermesh risk simulate --out)")
]
ModelsOption = Annotated[Path, typer.Option(help="folder of model artifacts")]
SinceOption = Annotated[
    datetime | None, typer.Option(help="learn from orders placed from then on (UTC)")
]
UntilOption = Annotated[
    datetime | None,
    typer.Option(help="labels as known then (UTC); default: the log's last event"),
]
MaturityOption = Annotated[
    float,
    typer.Option(min=0.0, help="days an order needs before its label counts as final"),
]


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A missing file, an unusable artifact or too little data: one line, exit 1."""
    try:
        yield
    except (OSError, ValueError, ServiceError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error


def _utc(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _table(lines: list[dict[str, Any]]) -> None:
    columns = ("kind", "version", "expected_cost_minor", "pr_auc", "recall_at_1pct_fpr", "brier")
    typer.echo("\t".join(columns))
    for line in lines:
        typer.echo(
            "\t".join(
                f"{line[c]:.4f}"
                if isinstance(line[c], float) and c != "expected_cost_minor"
                else str(line[c])
                for c in columns
            )
        )


DEFAULT_EVENTS = Path(".ordermesh/risk/sim")


@risk_app.command()
def train(
    events: Annotated[
        Path | None,
        typer.Option(help=f"folder holding events.jsonl; default: {DEFAULT_EVENTS}"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="train from payment's own records in this database instead: its decision "
            "log and the chargebacks it received"
        ),
    ] = None,
    out: ModelsOption = Path(".ordermesh/risk/models"),
    since: SinceOption = None,
    until: UntilOption = None,
    maturity_days: MaturityOption = 45.0,
) -> None:
    """Train the rules baseline, logistic regression and LightGBM on the matured labels,
    pick each one's cheapest threshold, measure them on a time-based holdout and write
    their artifacts (<kind>.json) and comparison.json."""
    if events is not None and database_url is not None:
        raise typer.BadParameter("give --events or --database-url, not both")
    if database_url is None:
        events = events or DEFAULT_EVENTS
    with _refusals():
        lines = load_risk_tools().train(
            events, out, _utc(since), _utc(until), maturity_days, database_url
        )
    _table(lines)


@risk_app.command()
def evaluate(
    events: EventsOption = Path(".ordermesh/risk/sim"),
    models: ModelsOption = Path(".ordermesh/risk/models"),
    out: Annotated[Path, typer.Option(help="folder for evaluation.json and the plots")] = Path(
        ".ordermesh/risk/evaluation"
    ),
    since: SinceOption = None,
    until: UntilOption = None,
    maturity_days: MaturityOption = 45.0,
) -> None:
    """Judge saved artifacts on the holdout of a log, at their own thresholds; write
    evaluation.json, pr_curve.png, cost_vs_threshold.png and calibration.png."""
    lines = load_risk_tools().evaluate(events, models, out, _utc(since), _utc(until), maturity_days)
    _table(lines)


DatabaseOption = Annotated[
    str | None,
    typer.Option(help="payment's database; default: ORDERMESH_DATABASE_URL or payment's default"),
]


@risk_app.command()
def register(
    model: Annotated[Path, typer.Argument(help="an artifact written by ordermesh risk train")],
    champion: Annotated[bool, typer.Option(help="make it the champion at once")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Add a model artifact to payment's registry, as a challenger."""
    with _refusals():
        _print(load_risk_tools().register(database_url, model, champion))


@risk_app.command()
def promote(
    version: Annotated[str, typer.Argument(help="a registered version (ordermesh risk models)")],
    events: EventsOption = Path(".ordermesh/risk/sim"),
    maturity_days: MaturityOption = 45.0,
    checks: Annotated[
        bool, typer.Option(help="judge it against the champion on the log's holdout first")
    ] = True,
    database_url: DatabaseOption = None,
) -> None:
    """Make a registered model the champion, if it beats the champion's cost with
    confidence and spreads its false declines evenly enough over customer segments
    (on the holdout of --events). Running payment-services pick it up within
    ORDERMESH_RISK_REGISTRY_POLL_S, without a restart."""
    with _refusals():
        _print(
            load_risk_tools().promote(
                database_url, version, events if checks else None, maturity_days
            )
        )


@risk_app.command()
def rollback(database_url: DatabaseOption = None) -> None:
    """Make the previous champion the champion again."""
    with _refusals():
        _print(load_risk_tools().rollback(database_url))


@risk_app.command()
def retire(
    version: Annotated[str, typer.Argument(help="a registered challenger (ordermesh risk models)")],
    database_url: DatabaseOption = None,
) -> None:
    """Take a challenger out of shadowing (and out of its A/B share). The champion cannot
    be retired: promote another model first. Registering beyond
    ORDERMESH_RISK_MAX_CHALLENGERS retires the oldest challengers by itself."""
    with _refusals():
        _print(load_risk_tools().retire(database_url, version))


@risk_app.command("models")
def list_models(database_url: DatabaseOption = None) -> None:
    """The registered models and their roles."""
    with _refusals():
        _print(load_risk_tools().models(database_url))


@risk_app.command()
def skew(database_url: DatabaseOption = None) -> None:
    """Replay payment's decision log through the feature definition and report, per
    feature, the decisions whose online features differ from the replay."""
    with _refusals():
        _print(load_risk_tools().skew(database_url))


@risk_app.command()
def report(
    chargebacks: Annotated[
        Path | None,
        typer.Option(
            help="a file of chargebacks (order ids, one a line, or JSON lines such as the "
            "simulator's events.jsonl); default: the chargebacks payment received"
        ),
    ] = None,
    maturity_days: MaturityOption = 45.0,
    out: Annotated[Path, typer.Option(help="folder for the plots")] = Path(
        ".ordermesh/risk/report"
    ),
    database_url: DatabaseOption = None,
) -> None:
    """Each variant's precision, recall and cost with 95% intervals, blocked traffic
    included (inverse-propensity weighting of the explored declines), and its
    false-decline and approval rates per segment (drawn in segments.png)."""
    with _refusals():
        _print(load_risk_tools().report(database_url, chargebacks, maturity_days, out))
