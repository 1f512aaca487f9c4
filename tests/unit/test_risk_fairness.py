"""Per-segment rates through fairlearn's MetricFrame, checked against hand counts."""

from __future__ import annotations

from ordermesh_payment.risk.fairness import SegmentRates, segment_rates

SEGMENTS = [
    {"billing_country": "DE", "customer": "new", "payment_token": "new"},
    {"billing_country": "DE", "customer": "new", "payment_token": "known"},
    {"billing_country": "DE", "customer": "returning", "payment_token": "known"},
    {"billing_country": "FR", "customer": "returning", "payment_token": "known"},
    {"billing_country": "FR", "customer": "returning", "payment_token": "known"},
    {"billing_country": "FR", "customer": "new", "payment_token": "new"},
]
LABELS = [0, 0, 1, 0, 0, 1]  # 1: fraud
DECLINED = [True, False, True, False, False, True]


def _by(rates: list[SegmentRates], segmentation: str) -> dict[str, tuple[int, int, float, float]]:
    """Rates rounded: thirds compare equal to their rounding."""
    return {
        r.segment: (r.orders, r.genuine, round(r.false_decline_rate, 6), round(r.approval_rate, 6))
        for r in rates
        if r.segmentation == segmentation
    }


def test_each_segmentation_gets_false_decline_and_approval_rates() -> None:
    rates = segment_rates(SEGMENTS, LABELS, DECLINED, min_genuine=1)
    # DE: genuine orders 0 and 1, one declined; 2 of 3 orders declined.
    assert _by(rates, "billing_country") == {
        "DE": (3, 2, 0.5, round(1 / 3, 6)),
        "FR": (3, 2, 0.0, round(2 / 3, 6)),
    }
    assert _by(rates, "customer") == {
        "new": (3, 2, 0.5, round(1 / 3, 6)),
        "returning": (3, 2, 0.0, round(2 / 3, 6)),
    }
    assert _by(rates, "payment_token")["new"] == (2, 1, 1.0, 0.0)


def test_segments_with_too_few_genuine_orders_are_left_out() -> None:
    rates = segment_rates(SEGMENTS, LABELS, DECLINED, min_genuine=2)
    assert set(_by(rates, "payment_token")) == {"known"}  # "new" has one genuine order


def test_weights_count_each_order_as_many() -> None:
    """An explored decline standing for four: DE's declined genuine order weighs 4."""
    weights = [4.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    rates = segment_rates(SEGMENTS, LABELS, DECLINED, min_genuine=1, weights=weights)
    orders, genuine, false_declines, approvals = _by(rates, "billing_country")["DE"]
    assert (orders, genuine) == (3, 2)  # counts stay counts
    assert false_declines == round(4 / 5, 6)
    assert approvals == round(1 / 6, 6)
