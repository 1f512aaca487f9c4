"""The identifier checks every service shares (ordermesh_platform.validation)."""

from __future__ import annotations

import pytest

from ordermesh_platform.errors import InvalidArgument, Validator
from ordermesh_platform.validation import (
    CUSTOMER_ID_MAX_LENGTH,
    ORDER_ID_MAX_LENGTH,
    check_customer_id,
    check_order_id,
    check_sku,
    validate_order_id,
)


@pytest.mark.parametrize("order_id", ["o", "0b7d9c2e-5f1a-4c3b-9e8d-7a6b5c4d3e2f", "x" * 64])
def test_an_order_id_of_1_to_64_printable_characters_passes(order_id: str) -> None:
    validate_order_id(order_id)


@pytest.mark.parametrize("order_id", ["", "x" * 65, "a\x00b", "a\nb", "\x7f"])
def test_any_other_order_id_is_invalid_argument_on_its_field(order_id: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_order_id(order_id)
    [violation] = raised.value.violations
    assert violation.field == "order_id"
    assert str(ORDER_ID_MAX_LENGTH) in violation.description


def test_an_order_id_check_names_the_callers_field() -> None:
    v = Validator()
    check_order_id(v, "", "requests[3].order_id")
    assert [x.field for x in v.violations] == ["requests[3].order_id"]


@pytest.mark.parametrize(
    ("customer_id", "ok"),
    [("c1", True), ("user@example.com", True), ("x" * CUSTOMER_ID_MAX_LENGTH, True),
     ("", False), ("x" * (CUSTOMER_ID_MAX_LENGTH + 1), False), ("c\x00", False), ("c\n", False)],
)  # fmt: skip
def test_a_customer_id_is_1_to_128_printable_characters(customer_id: str, ok: bool) -> None:
    v = Validator()
    check_customer_id(v, customer_id)
    assert [x.field for x in v.violations] == ([] if ok else ["customer_id"])


@pytest.mark.parametrize("sku", ["SKU-1", "a.b_c-D9", "x" * 64])
def test_a_sku_of_the_allowed_characters_passes(sku: str) -> None:
    v = Validator()
    check_sku(v, sku, "sku")
    assert v.violations == []


# "A\n": a pattern read with match() and "$" would pass it.
@pytest.mark.parametrize("sku", ["", "x" * 65, "A\n", "a b", "ü", "a/b"])
def test_any_other_sku_is_a_violation_on_its_field(sku: str) -> None:
    v = Validator()
    check_sku(v, sku, "items[0].sku")
    assert [x.field for x in v.violations] == ["items[0].sku"]
