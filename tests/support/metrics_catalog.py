"""What the services emit to Prometheus, read from the code, and a check of PromQL
expressions (the Grafana dashboard, the chart's alerts) against it.

The metrics are the objects of ``ordermesh_platform.metrics``. The label values a
query may match are read from the ``<METRIC>.labels(...)`` calls in libs/ and
services/: a label whose every call passes a literal has exactly those values; a label
set from a variable may take any string literal of the modules that set it, except
where the code names the values once (gRPC status codes, the saga's reasons, the
methods of the contracts).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import grpc
from prometheus_client.metrics import MetricWrapperBase

from ordermesh.inventory.v1 import inventory_pb2
from ordermesh.notification.v1 import notification_pb2
from ordermesh.order.v1 import order_pb2
from ordermesh.payment.v1 import payment_pb2
from ordermesh_order.domain import Reason
from ordermesh_platform import metrics

REPO = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((REPO / "libs").glob("*/src")), *sorted((REPO / "services").glob("*/src"))]

# A metric name in PromQL: not part of a longer identifier, a label value such as
# "ordermesh.orders.v1", or a string.
METRIC_NAME = re.compile(r"(?<![\w.\"-])ordermesh_[A-Za-z0-9_:]+")
# A selector: the metric name and what is between its braces.
SELECTOR = re.compile(r"(ordermesh_[A-Za-z0-9_:]+)\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
# A regular expression that is only a choice of plain values: a|b|c.
ALTERNATION = re.compile(r"^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$")

# The series prometheus_client exposes for one declared metric, by its type. Counters
# are declared without `_total` (the client strips it) and expose `_total`.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}

# Labels the scrape adds to every series (Prometheus, and the Prometheus Operator's
# ServiceMonitor targets): queries and alerts may match and group on them too.
TARGET_LABELS = frozenset({"namespace", "pod", "container", "endpoint", "job", "instance"})


def _rpc_methods() -> frozenset[str]:
    """The full gRPC method names the services serve, from the contracts."""
    names: set[str] = set()
    for module in (order_pb2, inventory_pb2, payment_pb2, notification_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return frozenset(names)


# Labels whose values the code names in one place.
NAMED_VALUES: dict[str, frozenset[str]] = {
    "code": frozenset(code.name for code in grpc.StatusCode),
    "reason": frozenset({"", *(reason.value for reason in Reason)}),
    "method": _rpc_methods(),
}


def declared() -> dict[str, MetricWrapperBase]:
    """Every metric object of ordermesh_platform.metrics, by its declared name."""
    found: dict[str, MetricWrapperBase] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                found[family.name] = value
    return found


def series_of(metric: MetricWrapperBase) -> dict[str, tuple[str, ...]]:
    """Exposed series name -> the labels a query may match on."""
    labels = tuple(metric._labelnames)
    series: dict[str, tuple[str, ...]] = {}
    for family in metric.describe():
        if family.type not in SUFFIXES:
            raise AssertionError(f"{family.name}: no rule for metric type {family.type}")
        for suffix in SUFFIXES[family.type]:
            extra: tuple[str, ...] = ()
            if suffix == "_bucket":
                extra = ("le",)
            elif family.type == "summary" and not suffix:
                extra = ("quantile",)
            series[family.name + suffix] = labels + extra
    return series


def all_series() -> dict[str, tuple[str, ...]]:
    series: dict[str, tuple[str, ...]] = {}
    for metric in declared().values():
        series.update(series_of(metric))
    return series


@dataclass
class _LabelValues:
    literals: set[str] = field(default_factory=set)
    dynamic: bool = False
    modules: set[Path] = field(default_factory=set)


def _literals(node: ast.expr) -> set[str] | None:
    """The strings an argument can be, when it is literal (or a choice of literals)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        body, orelse = _literals(node.body), _literals(node.orelse)
        if body is not None and orelse is not None:
            return body | orelse
    return None


def _module_strings(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


@cache
def label_values() -> dict[str, dict[str, frozenset[str]]]:
    """Declared metric name -> label -> the values the code can give it."""
    by_variable = {
        name: value for name, value in vars(metrics).items() if isinstance(value, MetricWrapperBase)
    }
    seen: dict[tuple[str, int], _LabelValues] = defaultdict(_LabelValues)
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "labels"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in by_variable
                ):
                    continue
                for position, arg in enumerate(node.args):
                    values = seen[(node.func.value.id, position)]
                    values.modules.add(path)
                    literal = _literals(arg)
                    if literal is None:
                        values.dynamic = True
                    else:
                        values.literals |= literal
    result: dict[str, dict[str, frozenset[str]]] = {}
    for variable, metric in by_variable.items():
        name = next(iter(metric.describe())).name
        labels: dict[str, frozenset[str]] = {}
        for position, label in enumerate(metric._labelnames):
            if label in NAMED_VALUES:
                labels[label] = NAMED_VALUES[label]
                continue
            given = seen.get((variable, position))
            if given is None:
                continue  # never set in the code: no value to check against
            if given.dynamic:
                strings: set[str] = set()
                for module in given.modules:
                    strings |= _module_strings(module)
                labels[label] = frozenset(strings)
            else:
                labels[label] = frozenset(given.literals)
        result[name] = labels
    return result


def _declared_name(series: str) -> str:
    names = declared()
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created", ""):
        base = series.removesuffix(suffix) if suffix else series
        if base in names:
            return base
    raise KeyError(series)


def problems(expr: str) -> list[str]:
    """What in one PromQL expression is not something the services emit: a metric
    they do not declare, a label the metric lacks, a value the label never takes."""
    series = all_series()
    found: list[str] = []
    names = METRIC_NAME.findall(expr)
    if not names:
        return [f"no ordermesh metric in {expr!r}"]
    for name in sorted(set(names) - series.keys()):
        found.append(f"{name} is not declared in ordermesh_platform.metrics")
    known = [n for n in names if n in series]
    in_expr = set().union(*(series[n] for n in known)) if known else set()
    for group in GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in in_expr | TARGET_LABELS:
                found.append(f"grouping on {label!r}, which no metric of the expression has")
    for name, matchers in SELECTOR.findall(expr):
        if name not in series:
            continue
        values = label_values().get(_declared_name(name), {})
        for label, op, value in MATCHER.findall(matchers):
            if label in TARGET_LABELS:
                continue
            if label not in series[name]:
                found.append(f"{name} has no label {label!r} (it has {', '.join(series[name])})")
                continue
            if label not in values or op in ("!=", "!~") or "$" in value:
                continue
            wanted = [value] if op == "=" else value.split("|")
            if op == "=~" and not ALTERNATION.match(value):
                continue
            for one in wanted:
                if one not in values[label]:
                    found.append(f'{name}{{{label}="{one}"}}: the code never sets that value')
    return found
