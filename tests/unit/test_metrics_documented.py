"""docs/observability.md lists every metric the services expose, with its type and
labels as registered: an operator reading the table finds what /metrics shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ordermesh_platform import metrics
from tests.support.metrics_catalog import declared

DOC = Path(__file__).parents[2] / "docs" / "observability.md"


def _registered() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each metric of the shared module: its name, type and label names."""
    found = {}
    for name, metric in declared().items():
        kind = str(metric._type)
        # A counter's samples carry _total; the docs name it so, as PromQL does.
        found[name + ("_total" if kind == "counter" else "")] = (kind, tuple(metric._labelnames))
    return found


def _documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The rows of the metrics table: | `name` | type | labels | meaning | filled by |."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 5 and re.fullmatch(r"`ordermesh_\w+`", cells[0]):
            labels = tuple(re.findall(r"`(\w+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def test_every_registered_metric_has_a_row_with_its_type_and_labels() -> None:
    registered, documented = _registered(), _documented()
    assert registered, "no metric found in ordermesh_platform.metrics"
    assert registered == documented


def test_a_metric_of_one_service_shows_only_where_that_service_exposes_it() -> None:
    # A fresh interpreter: the test process may have run a service already.
    script = (
        "import prometheus_client as p\n"
        "from ordermesh_platform import metrics as m\n"
        "before = p.generate_latest().decode()\n"
        "m.expose(*m.ONE_SERVICE)\n"
        "m.expose(*m.ONE_SERVICE)\n"
        "print(before)\n"
        "print('--- exposed')\n"
        "print(p.generate_latest().decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    before, after = out.split("--- exposed")
    for metric in metrics.ONE_SERVICE:
        assert f"# TYPE {metric._name} " not in before
        assert f"# TYPE {metric._name} " in after
