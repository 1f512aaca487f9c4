"""``ordermesh bench``, ``ordermesh soak`` and ``ordermesh chaos``.

They join the ``ordermesh`` command through the ``ordermesh.commands`` entry point
(``register`` below), so the CLI never imports the bench: where the bench is not
installed, as in the production image, ``ordermesh`` simply lacks these commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from ordermesh_platform.dependencies import reach_database


def register(app: typer.Typer) -> None:
    """The ``ordermesh.commands`` entry point: add the bench's commands to ``app``."""
    app.command(short_help="Benchmark PlaceOrder against its baselines.")(bench)
    app.command(short_help="Place many orders without waiting, then check every invariant.")(soak)
    app.command()(chaos)


def bench(
    postgres: Annotated[str, typer.Option(help="PostgreSQL server URL")] = (
        "postgresql://postgres@127.0.0.1:5432"
    ),
    base_port: Annotated[int, typer.Option(help="first of the ports the suite uses")] = 26051,
    level_s: Annotated[float, typer.Option(help="seconds per closed-loop level")] = 8.0,
    levels: Annotated[str, typer.Option(help="closed-loop concurrency levels")] = (
        "4,16,32,128,256"
    ),
    open_loop_s: Annotated[float, typer.Option(help="seconds of each half-load run")] = 10.0,
    events: Annotated[int, typer.Option(help="events for the relay bound")] = 20_000,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of SKU popularity; 0: uniform")] = 1.1,
    decline_share: Annotated[float, typer.Option(help="share of declined payments")] = 0.05,
    out: Annotated[Path, typer.Option(help="where latest.json and latest.png go")] = Path(
        "bench/results"
    ),
) -> None:
    """Benchmark PlaceOrder against its baselines (echo chain, raw SQL, raw producer)."""
    from ordermesh_bench.suite import BenchConfig, run_suite

    asyncio.run(reach_database(postgres))
    config = BenchConfig(
        postgres=postgres,
        base_port=base_port,
        levels=tuple(int(x) for x in levels.split(",")),
        level_s=level_s,
        raw_sql_s=level_s,
        open_loop_s=open_loop_s,
        events=events,
        zipf_s=zipf,
        decline_share=decline_share,
        out=out,
    )
    report = asyncio.run(run_suite(config))
    typer.echo(json.dumps({k: report[k] for k in ("ratios", "invariants_ok")}, indent=2))
    raise typer.Exit(0 if report["invariants_ok"] else 1)


def soak(
    orders: Annotated[int, typer.Option(help="orders to place")] = 1_000_000,
    postgres: Annotated[str, typer.Option(help="PostgreSQL server URL")] = (
        "postgresql://postgres@127.0.0.1:5432"
    ),
    concurrency: Annotated[int, typer.Option(help="callers at once")] = 32,
    max_minutes: Annotated[
        float, typer.Option(help="stop placing orders after this long; 0: no limit")
    ] = 0,
    max_lag: Annotated[
        int, typer.Option(help="hold placing while consumers are this many events behind; 0: never")
    ] = 2000,
) -> None:
    """Place many orders without waiting; report memory, backlog and the invariants."""
    from ordermesh_bench.soak import SoakConfig, run_soak

    asyncio.run(reach_database(postgres))
    config = SoakConfig(
        orders, postgres, concurrency=concurrency, max_s=max_minutes * 60, max_lag=max_lag
    )
    result = asyncio.run(run_soak(config))
    summary = {k: v for k, v in result.items() if k != "samples"}
    typer.echo(json.dumps(summary, indent=2))
    raise typer.Exit(0 if result["invariants_ok"] else 1)


def chaos(
    orders: Annotated[int, typer.Option(help="orders placed under the faults")] = 5000,
    kills: Annotated[int, typer.Option(help="SIGKILLs of random services")] = 10,
    broker_outage_s: Annotated[float, typer.Option(help="broker stopped this long; 0: no")] = 20,
    restart_postgres: Annotated[bool, typer.Option(help="restart PostgreSQL once")] = True,
    psp_slow_s: Annotated[float, typer.Option(help="provider latency, then failing; 0: no")] = 5,
    postgres: Annotated[str, typer.Option(help="PostgreSQL server URL")] = (
        "postgresql://postgres@127.0.0.1:5432"
    ),
) -> None:
    """Load the mesh while injecting faults; then check every invariant."""
    from ordermesh_bench.chaos import ChaosConfig, run_chaos

    asyncio.run(reach_database(postgres))
    config = ChaosConfig(
        orders=orders,
        kills=kills,
        broker_outage_s=broker_outage_s,
        restart_postgres=restart_postgres,
        psp_slow_s=psp_slow_s,
        postgres=postgres,
    )
    report = asyncio.run(run_chaos(config)).as_dict()
    typer.echo(json.dumps(report, indent=2))
    typer.echo(
        f"orders placed {report['orders_placed']}, faults injected {report['faults_injected']}, "
        f"violations {len(report['violations'])}"
    )
    raise typer.Exit(0 if not report["violations"] else 1)
