"""What valid data is, per service database, as SQL: each query finds the rows that
break one rule, so after a fuzz suite every one of them must find none.

The queries name {currencies} (the ISO 4217 codes), {max_amount} (MAX_AMOUNT_MINOR)
and {sku} (the SKU pattern); ``Mesh.assert_no_rows`` fills them in.
"""

from __future__ import annotations

INVENTORY = {
    "product with a bad SKU, name, price or currency": """
        SELECT sku, name, unit_price_minor, currency FROM products
        WHERE sku !~ {sku} OR char_length(name) NOT BETWEEN 1 AND 256
           OR unit_price_minor NOT BETWEEN 0 AND {max_amount}
           OR NOT currency = ANY({currencies})""",
    "stock row with a negative count": """
        SELECT * FROM stock WHERE available < 0 OR reserved < 0 OR committed < 0""",
    "stock row without its product, or product without its stock row": """
        SELECT p.sku, s.sku FROM products p FULL JOIN stock s ON s.sku = p.sku
        WHERE p.sku IS NULL OR s.sku IS NULL""",
    "units made or lost (available + reserved + committed != sum of adjustments)": """
        SELECT s.*, a.total FROM stock s
        LEFT JOIN (SELECT sku, sum(delta) AS total FROM stock_adjustments GROUP BY sku) a
          ON a.sku = s.sku
        WHERE s.available + s.reserved + s.committed <> coalesce(a.total, 0)""",
    "reserved or committed units that no reservation holds": """
        SELECT s.*, h.reserved AS held_reserved, h.committed AS held_committed FROM stock s
        LEFT JOIN (
          SELECT l.sku,
                 sum(l.quantity) FILTER (WHERE r.state = 'RESERVED') AS reserved,
                 sum(l.quantity) FILTER (WHERE r.state = 'COMMITTED') AS committed
          FROM reservation_lines l JOIN reservations r ON r.order_id = l.order_id
          GROUP BY l.sku
        ) h ON h.sku = s.sku
        WHERE s.reserved <> coalesce(h.reserved, 0) OR s.committed <> coalesce(h.committed, 0)""",
    "adjustment with a bad id, SKU, delta or note": """
        SELECT * FROM stock_adjustments
        WHERE char_length(adjustment_id) NOT BETWEEN 1 AND 128 OR sku !~ {sku}
           OR delta = 0 OR abs(delta) > 1000000000 OR char_length(note) > 256""",
    "reservation with a bad order id, state or currency": """
        SELECT * FROM reservations
        WHERE char_length(order_id) NOT BETWEEN 1 AND 64
           OR state NOT IN ('RESERVED', 'COMMITTED', 'RELEASED')
           OR NOT (currency = ANY({currencies}) OR (state = 'RELEASED' AND currency = 'XXX'))""",
    "reservation line with a bad SKU, quantity or price": """
        SELECT * FROM reservation_lines
        WHERE sku !~ {sku} OR quantity NOT BETWEEN 1 AND 1000
           OR unit_price_minor NOT BETWEEN 0 AND {max_amount}""",
    "reservation with no lines or more than 50 (release tombstones aside)": """
        SELECT r.order_id, count(l.sku) AS lines FROM reservations r
        LEFT JOIN reservation_lines l ON l.order_id = r.order_id
        WHERE NOT (r.state = 'RELEASED' AND r.currency = 'XXX')
        GROUP BY r.order_id HAVING count(l.sku) NOT BETWEEN 1 AND 50""",
}

# Void tombstones (VOIDED, no customer, 0 "XXX") are by design: a void that came before
# its authorization (docs/architecture.md, "Tombstones").
_TOMBSTONE = "(state = 'VOIDED' AND customer_id = '' AND amount_minor = 0 AND currency = 'XXX')"
PAYMENT = {
    "payment with an amount <= 0 or over MAX_AMOUNT_MINOR, or an unknown currency": f"""
        SELECT * FROM payments WHERE NOT {_TOMBSTONE}
          AND (amount_minor NOT BETWEEN 1 AND {{max_amount}}
               OR NOT currency = ANY({{currencies}}))""",
    "payment with a bad order id, customer or state": f"""
        SELECT * FROM payments
        WHERE char_length(order_id) NOT BETWEEN 1 AND 64
           OR (char_length(customer_id) NOT BETWEEN 1 AND 128 AND NOT {_TOMBSTONE})
           OR state NOT IN ('AUTHORIZING', 'AUTHORIZED', 'CAPTURED', 'VOIDED', 'REFUNDED',
                            'DECLINED')""",
    "authorized, captured or refunded payment without a provider reference": """
        SELECT * FROM payments
        WHERE state IN ('AUTHORIZED', 'CAPTURED', 'REFUNDED') AND psp_reference = ''""",
}

NOTIFICATION = {
    "preferences with a bad customer id or channel list": """
        SELECT * FROM preferences
        WHERE char_length(customer_id) NOT BETWEEN 1 AND 128 OR channels = ''
           OR NOT string_to_array(channels, ',') <@ ARRAY['LOG', 'EMAIL', 'WEBHOOK']""",
    "e-mail channel without a usable address": """
        SELECT * FROM preferences
        WHERE 'EMAIL' = ANY(string_to_array(channels, ','))
          AND (position('@' in email) = 0 OR char_length(email) > 254
               OR email ~ '[[:space:][:cntrl:]]')""",
    "webhook URL that is not a plain http(s) URL": """
        SELECT * FROM preferences
        WHERE webhook_url <> ''
          AND (webhook_url !~* '^https?://[^/?#]' OR webhook_url ~ '[[:space:][:cntrl:]]'
               OR char_length(webhook_url) >= 2048)""",
    "delivery without an event (none was published)": "SELECT * FROM deliveries",
}

ORDER = {
    "order with a bad customer, key, state, currency or payment token": """
        SELECT * FROM orders
        WHERE char_length(customer_id) NOT BETWEEN 1 AND 128 OR customer_id ~ '[[:cntrl:]]'
           OR char_length(idempotency_key) NOT BETWEEN 1 AND 128
           OR idempotency_key ~ '[[:cntrl:]]'
           OR state NOT IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')
           OR NOT currency = ANY({currencies})
           OR char_length(payment_token) NOT BETWEEN 1 AND 256""",
    "order line with a bad SKU, quantity or price": """
        SELECT * FROM order_lines
        WHERE sku !~ {sku} OR quantity NOT BETWEEN 1 AND 1000
           OR unit_price_minor NOT BETWEEN 0 AND {max_amount}""",
    "order with no lines, more than 50, or a SKU twice": """
        SELECT o.order_id, count(l.line_no) AS lines, count(DISTINCT l.sku) AS skus
        FROM orders o LEFT JOIN order_lines l ON l.order_id = o.order_id
        GROUP BY o.order_id
        HAVING count(l.line_no) NOT BETWEEN 1 AND 50
            OR count(DISTINCT l.sku) <> count(l.line_no)""",
    "confirmed or cancelled paid order without its payment, or a wrong total": """
        SELECT o.order_id, o.total_minor, sum(l.quantity * l.unit_price_minor) AS lines_total
        FROM orders o JOIN order_lines l ON l.order_id = o.order_id
        WHERE o.state IN ('CONFIRMED', 'CANCELLED')
        GROUP BY o.order_id, o.total_minor, o.payment_id
        HAVING (o.payment_id = '' AND o.total_minor <> 0) OR o.total_minor IS NULL
            OR o.total_minor <> sum(l.quantity * l.unit_price_minor)""",
    "negative total": "SELECT * FROM orders WHERE total_minor < 0",
}
