"""Money (ordermesh_platform.money): the accepted currencies, their minor units, and
an amount written out from integer minor units."""

from __future__ import annotations

import pytest

from ordermesh_platform.money import EXPONENTS, format_minor, is_currency


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "KWD", "CHF", "XCG", "VED"])
def test_current_iso_4217_currencies_are_accepted(code: str) -> None:
    assert is_currency(code)


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("eur", "codes are upper case"),
        ("", "empty"),
        ("EURO", "not a code"),
        ("XAU", "gold has no minor unit"),
        ("XDR", "a drawing right is not charged"),
        ("XTS", "reserved for tests"),
        ("XXX", "no currency"),
        ("ANG", "withdrawn: replaced by XCG"),
        ("BGN", "withdrawn: Bulgaria uses EUR"),
    ],
)
def test_other_codes_are_refused(code: str, why: str) -> None:
    assert not is_currency(code), why


@pytest.mark.parametrize(
    ("code", "exponent"),
    # ISO's minor units, not a locale's: IQD has 3 (CLDR writes it with none), ISK 0.
    [("EUR", 2), ("JPY", 0), ("KRW", 0), ("ISK", 0), ("KWD", 3), ("IQD", 3), ("CLF", 4)],
)
def test_each_currency_has_its_iso_4217_minor_unit(code: str, exponent: int) -> None:
    assert EXPONENTS[code] == exponent


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1234, "EUR", "12.34 EUR"),
        (5, "EUR", "0.05 EUR"),
        (100, "USD", "1.00 USD"),
        (0, "EUR", "0.00 EUR"),
        (-250, "EUR", "-2.50 EUR"),
        (1234, "JPY", "1234 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (7, "BHD", "0.007 BHD"),
        (123456789, "TND", "123456.789 TND"),
        (10**12, "EUR", "10000000000.00 EUR"),  # the largest amount, not in exponent form
        (1234, "ZZZ", "12.34 ZZZ"),  # an unknown code is still written
    ],
)
def test_money_is_written_with_the_currencys_iso_4217_decimals(
    amount: int, currency: str, text: str
) -> None:
    assert format_minor(amount, currency) == text
