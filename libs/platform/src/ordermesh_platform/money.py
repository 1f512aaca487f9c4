"""Money rules shared by every service: integer minor units, ISO 4217 codes, and an
amount written out for a person.

The currencies come from the ``iso4217`` package (ISO's published list, a release per
list amendment), never from a hand list: one kept that way accepted codes ISO had
withdrawn (ANG, BGN) and refused new ones (XCG, VED). Accepted: every currency on the
current list that has a minor unit, which leaves out what is not money one can be
charged in (gold and the other metals, SDR, bond-market units, XTS for tests and XXX
for "no currency"). What a given order may use is narrowed further by the catalogue: a
product has one currency, and an order in another is rejected (CURRENCY_MISMATCH).
"""

from __future__ import annotations

from decimal import Decimal

from iso4217 import Currency

# Minor-unit exponent by code: 2 for EUR (cents), 0 for JPY, 3 for KWD.
EXPONENTS: dict[str, int] = {c.code: c.exponent for c in Currency if c.exponent is not None}
CURRENCIES = frozenset(EXPONENTS)

# Largest amount accepted anywhere: far above any real order, far below int64 overflow
# when multiplied by a line quantity and summed over lines.
MAX_AMOUNT_MINOR = 10**12


def is_currency(code: str) -> bool:
    return code in CURRENCIES


def format_minor(amount_minor: int, currency: str) -> str:
    """``(1234, "EUR")`` → ``"12.34 EUR"``; JPY has no decimals, KWD three. Exact
    (Decimal, never a float). A code outside the list is written with two decimals:
    text must still be rendered for an event that carries one."""
    exponent = EXPONENTS.get(currency, 2)
    number = Decimal(amount_minor).scaleb(-exponent)
    return f"{number:f} {currency}"
