"""The risk models and their artifacts.

An artifact is one JSON file: the model as data (rules, logistic coefficients, or
LightGBM's own text format), its version, training window, feature-schema hash,
threshold, metrics and per-segment fairness report. Loading one parses text and never
runs code from it (no pickle); a model trained on another feature schema is refused."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

FORMAT = "ordermesh-risk-model/1"
KINDS = ("rules", "logistic", "lightgbm")


class ArtifactError(ValueError):
    """An artifact that cannot be used: unreadable, of another format or schema."""


class Model(Protocol):
    kind: str

    def scores(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        """A risk score in [0, 1] per feature vector; higher is riskier."""
        ...

    def payload(self) -> dict[str, Any]:
        """The model as JSON-able data."""
        ...


# -- rules -------------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Rule:
    name: str
    weight: float  # the score this rule alone gives
    conditions: tuple[tuple[str, str, float], ...]  # (feature, operator, value), all must hold


# The baseline a risk team writes by hand, one rule per pattern it knows; it is also
# what decides when no model can (missing, failing, over its latency budget).
BASELINE_RULES = (
    Rule("many_tokens", 0.6, (("customer_distinct_tokens_24h", ">=", 4),)),
    Rule("recent_declines", 0.5, (("customer_declines_1h", ">=", 2),)),
    Rule("device_declines", 0.5, (("device_declines_1h", ">=", 2),)),
    Rule("burst", 0.4, (("customer_count_1h", ">=", 4),)),
    Rule(
        "takeover",
        0.6,
        (
            ("device_seen_before", "==", 0),
            ("ip_seen_before", "==", 0),
            ("customer_age_h", ">=", 24 * 7),
            ("country_mismatch", "==", 1),
        ),
    ),
    Rule("resale_abroad", 0.4, (("resale_share", ">=", 0.5), ("country_mismatch", "==", 1))),
    Rule("new_account_resale", 0.4, (("account_age_d", "<", 7), ("resale_share", ">=", 0.5))),
    Rule("unusual_amount", 0.2, (("amount_vs_usual", ">=", 5),)),
)


class RulesModel:
    kind = "rules"

    def __init__(self, rules: Sequence[Rule], feature_names: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(feature_names)}
        for rule in rules:
            for feature, op, _ in rule.conditions:
                if feature not in index or op not in _OPS:
                    raise ArtifactError(f"rule {rule.name}: unknown {feature!r} or {op!r}")
        self.rules = tuple(rules)
        self._compiled = [
            (rule.weight, [(index[f], _OPS[op], value) for f, op, value in rule.conditions])
            for rule in self.rules
        ]

    def fired(self, vector: Sequence[float]) -> list[str]:
        return [
            rule.name
            for rule, (_, conditions) in zip(self.rules, self._compiled, strict=True)
            if all(op(vector[i], value) for i, op, value in conditions)
        ]

    def score(self, vector: Sequence[float]) -> float:
        """1 - the product of (1 - weight) over the rules that fire: 0 when none does."""
        passed = 1.0
        for weight, conditions in self._compiled:
            if all(op(vector[i], value) for i, op, value in conditions):
                passed *= 1.0 - weight
        return 1.0 - passed

    def scores(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        return [self.score(v) for v in vectors]

    def payload(self) -> dict[str, Any]:
        return {
            "rules": [
                {
                    "name": r.name,
                    "weight": float(r.weight),
                    "conditions": [[f, op, float(v)] for f, op, v in r.conditions],
                }
                for r in self.rules
            ]
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], feature_names: Sequence[str]) -> RulesModel:
        rules = [
            Rule(
                r["name"],
                float(r["weight"]),
                tuple((f, op, float(v)) for f, op, v in r["conditions"]),
            )
            for r in payload["rules"]
        ]
        return cls(rules, feature_names)


# -- logistic regression --------------------------------------------------------------


class LogisticModel:
    """Standardized features, a linear score, the logistic function: scored in plain
    Python from its coefficients, so serving it needs no ML library."""

    kind = "logistic"

    def __init__(
        self,
        means: Sequence[float],
        scales: Sequence[float],
        coefficients: Sequence[float],
        intercept: float,
    ) -> None:
        if not len(means) == len(scales) == len(coefficients):
            raise ArtifactError("logistic model: coefficient lengths differ")
        self.means = list(means)
        self.scales = list(scales)
        self.coefficients = list(coefficients)
        self.intercept = float(intercept)

    def score(self, vector: Sequence[float]) -> float:
        z = self.intercept + sum(
            c * (x - m) / s
            for x, m, s, c in zip(vector, self.means, self.scales, self.coefficients, strict=True)
        )
        # Split by sign so a large |z| never overflows exp.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def scores(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        return [self.score(v) for v in vectors]

    def payload(self) -> dict[str, Any]:
        return {
            "means": self.means,
            "scales": self.scales,
            "coefficients": self.coefficients,
            "intercept": self.intercept,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> LogisticModel:
        return cls(
            payload["means"], payload["scales"], payload["coefficients"], payload["intercept"]
        )


# -- gradient-boosted trees -----------------------------------------------------------


class LightGBMModel:
    """LightGBM trees in LightGBM's own text format, scored by its Booster."""

    kind = "lightgbm"

    def __init__(self, model_text: str) -> None:
        try:
            import lightgbm
        except ImportError as error:  # the training extra is not installed here
            raise ArtifactError("lightgbm models need the lightgbm package") from error
        try:
            self.booster = lightgbm.Booster(model_str=model_text)
        except lightgbm.basic.LightGBMError as error:
            raise ArtifactError(f"lightgbm model does not load: {error}") from error
        self.model_text = model_text

    def scores(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        import numpy as np

        if not vectors:
            return []
        predicted = self.booster.predict(np.asarray(vectors, dtype=np.float64), num_threads=1)
        return [float(p) for p in predicted]

    def payload(self) -> dict[str, Any]:
        return {"model_text": self.model_text}


# -- artifacts -------------------------------------------------------------------------


@dataclass
class Artifact:
    model: Model
    feature_names: tuple[str, ...]
    feature_schema_hash: str
    threshold: float  # decline at or above
    training_window: dict[str, str]  # since, until, labels_as_of (ISO 8601)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Score and feature distributions on the training rows, for PSI (risk/drift.py).
    reference: dict[str, Any] = field(default_factory=dict)
    # Per-segment false-decline and approval rates on the holdout (risk/fairness.py).
    fairness: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.model.kind

    @functools.cached_property
    def version(self) -> str:
        """The kind and a digest of what decides: the same model, the same version.
        Computed once: an artifact is built whole and never changed, and the digest of a
        LightGBM model's text cost a fifth of payment's CPU when taken per decision."""
        content = json.dumps(
            [self.model.payload(), self.feature_schema_hash, self.threshold], sort_keys=True
        )
        return f"{self.kind}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "version": self.version,
            "feature_schema_hash": self.feature_schema_hash,
            "feature_names": list(self.feature_names),
            "threshold": self.threshold,
            "training_window": self.training_window,
            "metrics": self.metrics,
            "reference": self.reference,
            "fairness": self.fairness,
            "model": self.model.payload(),
        }

    def text(self) -> str:
        return json.dumps(self.to_json(), indent=1) + "\n"

    def save(self, path: Path) -> Path:
        path.write_text(self.text(), encoding="utf-8")
        return path


def load_artifact(path: Path, expected_schema_hash: str | None = None) -> Artifact:
    """Read an artifact file; ArtifactError when it is unreadable, of another format,
    or (with ``expected_schema_hash``) trained on other features."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: {error}") from error
    return parse_artifact(text, str(path), expected_schema_hash)


def parse_artifact(text: str, path: str, expected_schema_hash: str | None = None) -> Artifact:
    """An artifact from its JSON text (a file's, or the registry's); ``path`` names
    where it came from in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path}: {error}") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} artifact")
    schema = data.get("feature_schema_hash")
    if not isinstance(schema, str):
        raise ArtifactError(f"{path}: no feature schema hash")
    if expected_schema_hash is not None and schema != expected_schema_hash:
        raise ArtifactError(
            f"{path}: trained on feature schema {schema}, this service computes "
            f"{expected_schema_hash}"
        )
    try:
        names = tuple(data["feature_names"])
        payload = data["model"]
        model: Model
        match data["kind"]:
            case "rules":
                model = RulesModel.from_payload(payload, names)
            case "logistic":
                model = LogisticModel.from_payload(payload)
            case "lightgbm":
                model = LightGBMModel(payload["model_text"])
            case other:
                raise ArtifactError(f"{path}: unknown model kind {other!r}")
        artifact = Artifact(
            model, names, schema, float(data["threshold"]), dict(data["training_window"]),
            dict(data.get("metrics", {})),
            dict(data.get("reference", {})),
            dict(data.get("fairness", {})),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, ArtifactError):
            raise
        raise ArtifactError(f"{path}: malformed artifact: {error!r}") from error
    if artifact.version != data.get("version"):
        raise ArtifactError(f"{path}: its content does not match version {data.get('version')}")
    return artifact
