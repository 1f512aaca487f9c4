"""The chaos suite, short: load while services are SIGKILLed, the broker stops, the
database restarts and the payment provider turns slow; then zero violations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ordermesh_bench.chaos import ChaosConfig, run_chaos
from tests.support.ports import free_port_block
from tests.support.postgres import SERVER_URL

# It restarts the shared PostgreSQL: no other test may run meanwhile (`make test`).
pytestmark = [pytest.mark.e2e, pytest.mark.serial]


async def test_a_short_chaos_run_ends_with_no_violations(tmp_path: Path) -> None:
    report = await run_chaos(
        ChaosConfig(
            orders=600,
            kills=3,
            broker_outage_s=5,
            restart_postgres=True,
            psp_slow_s=2,
            concurrency=8,
            postgres=SERVER_URL,
            base_port=free_port_block(4),
            state_dir=tmp_path,
        )
    )
    assert report.violations == []
    assert sum(f.startswith("SIGKILL") for f in report.faults) == 3
    assert "PostgreSQL restarted" in report.faults
    assert any(f.startswith("broker stopped") for f in report.faults)
    assert report.orders_acknowledged > 0
    assert sum(report.orders_by_state.values()) >= report.orders_acknowledged
    # Each order's creation and its end, at least: the event checks were not empty.
    assert report.events_checked >= 2 * report.orders_acknowledged
