from __future__ import annotations

import pytest

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_inventory.domain import (
    Adjustment,
    Product,
    StockLevel,
    validate_adjustment,
    validate_product,
)
from ordermesh_platform.errors import FailedPrecondition, InvalidArgument


def test_removing_more_than_available_is_refused() -> None:
    level = StockLevel("TEA", available=3, reserved=2, committed=1)
    assert level.adjusted(-3).available == 0
    with pytest.raises(FailedPrecondition) as raised:
        level.adjusted(-4)
    assert raised.value.reason == ErrorReason.INSUFFICIENT_STOCK


def test_adjusting_keeps_reserved_and_committed() -> None:
    level = StockLevel("TEA", available=3, reserved=2, committed=1).adjusted(10)
    assert (level.available, level.reserved, level.committed) == (13, 2, 1)


def test_a_bad_product_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_product(Product("bad sku!", "", -1, "EURO"))
    assert {v.field for v in raised.value.violations} == {
        "product.sku",
        "product.name",
        "product.unit_price.amount_minor",
        "product.unit_price.currency",
    }


def test_a_zero_adjustment_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        validate_adjustment(Adjustment("a-1", "TEA", 0, ""))
