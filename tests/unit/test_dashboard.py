"""The Grafana dashboard (k8s/ordermesh/dashboards/ordermesh-grafana.json) against the
metrics the services declare (ordermesh_platform.metrics): every series it queries
exists, every metric is on some panel, and every label it filters on is one the metric
has, with a value the code sets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ordermesh_payment.psp import Authorization, PspDeclined, ResilientProvider
from ordermesh_platform.resilience import CircuitBreaker, Transient
from tests.support.metrics_catalog import (
    MATCHER,
    METRIC_NAME,
    SELECTOR,
    all_series,
    declared,
    problems,
    series_of,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s/ordermesh/dashboards/ordermesh-grafana.json"


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves left out."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def _expressions(panel: dict[str, Any]) -> list[str]:
    return [str(target["expr"]) for target in panel.get("targets", []) if target.get("expr")]


def test_the_metrics_module_is_found() -> None:
    names = declared()
    assert "ordermesh_rpc_requests" in names  # a counter, declared without _total
    assert "ordermesh_rpc_duration_seconds" in names
    assert "ordermesh_psp_circuit_open" in names
    series = all_series()
    assert "ordermesh_rpc_requests_total" in series
    assert "ordermesh_rpc_duration_seconds_bucket" in series
    assert series["ordermesh_rpc_duration_seconds_bucket"][-1] == "le"


def test_the_dashboard_loads_with_its_datasource_and_service_variables() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 38
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    service = variables["service"]
    assert service["type"] == "query"
    query = service["query"]
    text = query["query"] if isinstance(query, dict) else query
    assert text.startswith("label_values(ordermesh_")
    assert text.endswith(", service)")


def test_every_row_has_a_title() -> None:
    for panel in _dashboard()["panels"]:
        if panel.get("type") == "row":
            assert panel.get("title"), panel


def test_every_panel_has_a_title_and_a_query_on_the_chosen_datasource() -> None:
    panels = _panels(_dashboard())
    assert panels
    for panel in panels:
        assert panel.get("title"), panel
        assert panel.get("targets"), f"{panel['title']}: no target"
        assert _expressions(panel), f"{panel['title']}: no PromQL expression"
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panel_ids_are_unique() -> None:
    dashboard = _dashboard()
    rows = [p for p in dashboard["panels"] if p.get("type") == "row"]
    ids = [p["id"] for p in [*rows, *_panels(dashboard)]]
    assert len(ids) == len(set(ids))


def test_every_metric_the_dashboard_queries_is_declared() -> None:
    series = all_series()
    for panel in _panels(_dashboard()):
        for expr in _expressions(panel):
            names = METRIC_NAME.findall(expr)
            assert names, f"{panel['title']}: no ordermesh metric in {expr}"
            unknown = sorted(set(names) - series.keys())
            assert not unknown, f"{panel['title']}: {unknown} not in ordermesh_platform.metrics"


def test_every_label_value_the_dashboard_matches_is_one_the_code_sets() -> None:
    for panel in _panels(_dashboard()):
        for expr in _expressions(panel):
            assert not problems(expr), f"{panel['title']}: {problems(expr)}"


def test_every_label_the_dashboard_matches_on_belongs_to_its_metric() -> None:
    series = all_series()
    for panel in _panels(_dashboard()):
        for expr in _expressions(panel):
            for name, matchers in SELECTOR.findall(expr):
                for label, _op, _value in MATCHER.findall(matchers):
                    assert label in series[name], (
                        f"{panel['title']}: {name} has no label {label!r} "
                        f"(it has {', '.join(series[name]) or 'none'})"
                    )


@pytest.mark.parametrize("name", sorted(declared()))
def test_every_declared_metric_is_on_a_panel(name: str) -> None:
    exposed = set(series_of(declared()[name]))
    used = {
        name
        for panel in _panels(_dashboard())
        for expr in _expressions(panel)
        for name in METRIC_NAME.findall(expr)
    }
    assert exposed & used, f"{name} is on no panel (looked for {sorted(exposed)})"


class _Provider:
    """A provider that answers each call as told: "ok", "decline" or "fail"."""

    def __init__(self) -> None:
        self.next = "ok"

    async def _answer(self) -> None:
        if self.next == "decline":
            raise PspDeclined("card_declined")
        if self.next == "fail":
            raise Transient("provider down")

    async def authorize(self, key: str, amount: int, currency: str, token: str) -> Authorization:
        await self._answer()
        return Authorization("ref")

    async def capture(self, key: str, reference: str, amount_minor: int) -> None:
        await self._answer()

    async def void(self, key: str, reference: str) -> None:
        await self._answer()

    async def refund(self, key: str, reference: str, amount_minor: int) -> None:
        await self._answer()


def _emitted_psp_outcomes() -> set[str]:
    """Every outcome the payment service's provider client reports, found by making it
    meet an answer, a decline, a failure and an open circuit."""
    seen: set[str] = set()
    provider = _Provider()
    client = ResilientProvider(
        provider,
        CircuitBreaker(threshold=1, open_s=60),
        timeout_s=1,
        attempts=1,
        observe=lambda op, seconds, outcome: seen.add(outcome),
    )

    async def each_answer() -> None:
        for answer in ("ok", "decline", "fail", "fail"):  # the second failure: circuit open
            provider.next = answer
            with contextlib.suppress(PspDeclined, Transient):
                await client.authorize("order-1", 100, "EUR", "tok", deadline=None)

    asyncio.run(each_answer())
    return seen


def test_the_psp_outcomes_emitted_are_the_ones_documented() -> None:
    emitted = _emitted_psp_outcomes()
    assert emitted == {"ok", "declined", "circuit_open", "error"}  # each one was met
    doc = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
    row = next(
        line
        for line in doc.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `ordermesh_psp_call_duration_seconds`")
    )
    documented = set(re.findall(r"`(\w+)`", row.split("|")[4]))
    assert emitted <= documented, f"docs/observability.md names {documented}, not {emitted}"
    panels = [p for p in _panels(_dashboard()) if "ordermesh_psp_call_duration" in str(p)]
    assert panels
    for panel in panels:
        for outcome in emitted:
            assert outcome in panel["description"], f"{panel['title']}: {outcome} unexplained"


def test_every_psp_outcome_the_dashboard_matches_is_one_the_provider_client_emits() -> None:
    emitted = _emitted_psp_outcomes()
    checked = 0
    for panel in _panels(_dashboard()):
        for expr in _expressions(panel):
            for name, matchers in SELECTOR.findall(expr):
                if not name.startswith("ordermesh_psp_call_duration_seconds"):
                    continue
                for label, op, value in MATCHER.findall(matchers):
                    if label == "outcome":
                        wanted = set(value.split("|") if "~" in op else [value])
                        assert wanted <= emitted, f"{panel['title']}: {wanted - emitted}"
                        checked += 1
    assert checked  # the latency panel leaves out circuit_open
