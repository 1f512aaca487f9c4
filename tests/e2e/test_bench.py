"""The benchmark suite, at a tiny size: it runs end to end, writes its report and plot,
and the invariants hold afterwards. (The figures themselves are for `make bench`.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ordermesh_bench.soak import SoakConfig, run_soak
from ordermesh_bench.suite import BenchConfig, run_suite
from tests.support.ports import free_port_block
from tests.support.postgres import SERVER_URL

pytestmark = pytest.mark.e2e

KEYS = (
    "place_order_sync",
    "place_order_async",
    "echo_chain",
    "raw_sql",
    "relay",
    "raw_producer",
    "hot_sku",
    "zipf_one_line",
)
RATIOS = (
    "sync_vs_echo_chain",
    "async_vs_raw_sql",
    "relay_vs_raw_producer",
    "p99_sync_vs_echo_chain_at_half_load",
    "hot_sku_vs_zipf",
    "risk_on_vs_off",
)


async def test_a_tiny_bench_reports_every_figure_and_the_invariants_hold(tmp_path: Path) -> None:
    config = BenchConfig(
        postgres=SERVER_URL,
        base_port=free_port_block(4),
        levels=(2,),
        level_s=1.0,
        telemetry_pairs=1,
        risk_pairs=1,
        relay_pairs=2,
        open_loop_s=1.0,
        raw_sql_s=1.0,
        events=300,
        pool_size=3,  # leaves room for a mesh beside the tests (docs/capacity.md)
        # A bound, not a wait: the warm-up ends once the champion has decided. 10 s
        # was too short for a payment restarted beside the rest of `make test`.
        ready_wait_s=60.0,
        out=tmp_path,
        state_dir=tmp_path / "state",
    )
    await run_suite(config)
    report = json.loads((tmp_path / "latest.json").read_text())
    for key in KEYS:
        assert report[key]["throughput_per_s"] > 0, key
        assert {"p50_ms", "p99_ms"} <= set(report[key])
    for side in ("relay", "raw_producer"):  # alternated, each side's best run reported
        runs = report[side]["runs_per_s"]
        assert len(runs) == 2, side
        assert report[side]["throughput_per_s"] == max(runs), side
    for ratio in RATIOS:
        assert report["ratios"][ratio] > 0, ratio
    assert report["invariants_ok"] is True
    assert set(report["cpu_ms_per_order"]) == {"order", "inventory", "payment", "notification"}
    assert all(ms > 0 for ms in report["cpu_ms_per_order"].values())
    # Beside the services: the database's and the broker's share of an order.
    assert set(report["infrastructure_cpu_ms_per_order"]) == {"postgres", "broker"}
    assert all(ms > 0 for ms in report["infrastructure_cpu_ms_per_order"].values())
    switches = report["context_switches_per_order"]
    assert set(switches) == {"order", "inventory", "payment", "notification", "postgres", "broker"}
    assert all(n > 0 for n in switches.values())  # every statement and message wakes one
    assert report["statements_per_order"] > 0
    assert report["rpcs_per_order"] >= 1  # PlaceOrder itself, at least
    hops = report["batch_size_by_hop"]
    assert {"order/order_insert", "order/reserve_stock", "order/authorize_payment"} <= set(hops)
    assert all(hop["mean_size"] >= 1 for hop in hops.values())
    # At half load, an order's time stage by stage: each hop's wait for its batch and
    # its batch's run, as order-service's batchers saw them.
    stages = report["half_load_sync"]["batch_time_ms_by_hop"]
    for hop in ("order/order_insert", "order/reserve_stock", "order/authorize_payment"):
        assert stages[hop]["wait_ms"] >= 0, hop
        assert stages[hop]["run_ms"] > 0, hop
    assert report["half_load_sync"]["cpu_ms_per_order"]["order"] > 0
    for side in ("half_load_sync", "half_load_echo"):  # alternated, each side's best run
        runs = report[side]["p99_ms_by_run"]
        assert len(runs) == 2, side
        assert report[side]["p99_ms"] == min(runs), side
    assert report["machine"]["cores"] >= 1
    telemetry = report["telemetry_cost"]
    assert [len(telemetry["runs"][side]) for side in ("off", "on")] == [1, 1]
    assert telemetry["cpu_ms_per_order_on"] > 0
    assert telemetry["cpu_ms_per_order_off"] > 0
    risk = report["risk_cost"]
    assert [len(risk["runs"][side]) for side in ("off", "on")] == [1, 1]
    assert risk["champion"].startswith("lightgbm-")
    for side in ("off", "on"):
        by_process = risk["runs"][side][0]["cpu_ms_per_order_by_process"]
        assert {"order", "inventory", "payment", "postgres", "broker"} <= set(by_process)
    # The trained champion scored the batches of the run with risk on, each within a
    # bucket of payment's scoring histogram.
    assert risk["batches_by_source"]["model"] > 0
    assert risk["model_p99_ms_per_batch"] > 0
    assert risk["model_p50_ms_per_batch"] <= risk["model_p99_ms_per_batch"]
    assert (tmp_path / "latest.png").stat().st_size > 0


async def test_a_tiny_soak_settles_with_the_invariants_holding(tmp_path: Path) -> None:
    result = await run_soak(
        SoakConfig(
            orders=200,
            postgres=SERVER_URL,
            base_port=free_port_block(4),
            sample_every_s=0.5,
            out=tmp_path,
            state_dir=tmp_path / "state",
        )
    )
    assert result["accepted"] == 200
    assert result["invariants_ok"] is True
    assert result["final_backlog"] == 0
    assert result["final_consumer_lag"] == 0
    assert result["final_notifications_due"] == 0
    assert set(result["memory_growth_10_to_100"]) == {
        "order",
        "inventory",
        "payment",
        "notification",
    }
    last = result["samples"][-1]
    assert last["owed"] == 0, "the last sample is taken once the mesh has settled"
    assert last["placed"] == 200
    assert all(rss > 0 for rss in last["rss_mb"].values())
    assert set(last["consumer_lag"]) == set(last["rss_mb"])
    # Sequential reads are sampled per table, the O(n)-statement detector of a long run.
    assert {"order.orders", "payment.payments", "inventory.stock"} <= set(last["seq_rows"])
    assert result["held_s"] >= 0
    assert result["stopped_at_max_s"] is False
    assert (tmp_path / "soak.png").stat().st_size > 0
