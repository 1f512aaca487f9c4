"""The identifiers every service checks the same way: order ids, customer ids, SKUs."""

from __future__ import annotations

import re

from ordermesh_platform.errors import Validator

# An order id names its events' aggregate in every service's outbox (aggregate_id,
# 64 characters): a longer one would pass a check and then fail to be recorded.
ORDER_ID_MAX_LENGTH = 64
CUSTOMER_ID_MAX_LENGTH = 128  # the token's subject, as the services' tables hold it
SKU_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_identifier(v: Validator, value: str, field: str, max_length: int) -> None:
    # Printable: no NUL (PostgreSQL refuses it in text) and no line breaks (an id
    # stands in mail subjects and log lines).
    v.check(
        0 < len(value) <= max_length and value.isprintable(),
        field,
        f"must be 1-{max_length} printable characters",
    )


def check_order_id(v: Validator, order_id: str, field: str = "order_id") -> None:
    check_identifier(v, order_id, field, ORDER_ID_MAX_LENGTH)


def check_customer_id(v: Validator, customer_id: str, field: str = "customer_id") -> None:
    check_identifier(v, customer_id, field, CUSTOMER_ID_MAX_LENGTH)


def validate_order_id(order_id: str) -> None:
    """INVALID_ARGUMENT unless ``order_id`` could name an order."""
    v = Validator()
    check_order_id(v, order_id)
    v.raise_if_invalid()


def check_sku(v: Validator, sku: str, field: str) -> None:
    # fullmatch: with match, "$" also matches before a final newline ("A\n" passed).
    v.check(bool(SKU_PATTERN.fullmatch(sku)), field, "must be 1-64 characters of A-Z a-z 0-9 . _ -")
