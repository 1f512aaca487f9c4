"""Risk settings (``ORDERMESH_RISK_*``): what mistakes cost, and the feature parameters."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ordermesh_payment.risk.features import FeatureDefinition


class RiskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERMESH_RISK_", extra="ignore")

    margin_rate: float = Field(
        0.25, ge=0, le=1, description="Share of an order's amount lost when it is wrongly declined."
    )
    chargeback_fee_minor: int = Field(
        1500, ge=0, description="What a chargeback costs on top of the amount taken back."
    )
    resale_prone_skus: list[str] = Field(
        default=[
            "GIFT-CARD-50", "GIFT-CARD-100", "PHONE-X", "CONSOLE-S", "SNEAKER-LTD", "LAPTOP-13",
        ],
        description="SKUs easy to sell on (a feature: their share of the amount).",
    )  # fmt: skip
    prior_amount_minor: int = Field(
        3000, gt=0, description="Cold start: the usual amount of a customer with no history."
    )

    max_false_decline_ratio: float = Field(
        3.0,
        ge=1,
        description="Promotion gate: the worst segment's false-decline rate over the best's.",
    )

    min_segment_genuine: int = Field(
        100, ge=1, description="Promotion gate: segments with fewer genuine orders are not judged."
    )

    max_challengers: int = Field(
        3,
        ge=1,
        description="Registry: registering a challenger beyond this many retires the "
        "oldest ones (each challenger shadows every batch).",
    )

    def feature_definition(self) -> FeatureDefinition:
        return FeatureDefinition(frozenset(self.resale_prone_skus), self.prior_amount_minor)
