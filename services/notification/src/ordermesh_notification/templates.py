"""What a customer is told: one plain-text template per customer-facing event. Pure
functions, no I/O; money is written by ``ordermesh_platform.money``."""

from __future__ import annotations

from ordermesh_notification.domain import Money, Notice, NoticeKind, Rendered
from ordermesh_platform.money import format_minor

# Order reasons (ordermesh.order.v1.OrderReason without prefix) in words.
_REASONS = {
    "OUT_OF_STOCK": "an item is out of stock",
    "CURRENCY_MISMATCH": "an item is not sold in the order's currency",
    "PAYMENT_DECLINED": "the payment was declined",
    "RISK_DECLINED": "the payment was declined",
    "PAYMENT_UNAVAILABLE": "the payment could not be processed in time",
    "SAGA_TIMEOUT": "the order could not be completed in time",
    "CANCELLED_BY_CUSTOMER": "you cancelled it",
}


def _written(money: Money) -> str:
    return format_minor(money.amount_minor, money.currency)


def _reason(code: str, detail: str) -> str:
    words = _REASONS.get(code, code.replace("_", " ").lower() or "unknown")
    text = f"{words} ({code})" if code else words
    return f"{text}: {detail}" if detail else text


def _one_line(text: str) -> str:
    # A subject is a mail header: no line breaks, whatever an id holds.
    return " ".join(text.split())


def render(notice: Notice) -> Rendered:
    order = notice.order_id
    match notice.kind:
        case NoticeKind.ORDER_CONFIRMED:
            subject = f"Order {order} confirmed"
            lines = [f"Your order {order} is confirmed.", ""]
            for line in notice.lines:
                price = f" at {_written(line.unit_price)}" if line.unit_price else ""
                lines.append(f"  {line.quantity} x {line.sku}{price}")
            if notice.amount is not None:
                lines += ["", f"Total: {_written(notice.amount)}"]
        case NoticeKind.ORDER_REJECTED:
            subject = f"Order {order} could not be completed"
            lines = [
                f"We could not complete your order {order}.",
                f"Reason: {_reason(notice.reason, notice.reason_detail)}.",
                "No payment has been taken and no stock is held for it.",
            ]
        case NoticeKind.ORDER_CANCELLED:
            subject = f"Order {order} cancelled"
            lines = [
                f"Your order {order} has been cancelled.",
                f"Reason: {_reason(notice.reason, '')}.",
            ]
            if notice.amount is not None:
                lines.append(f"Amount released or refunded: {_written(notice.amount)}")
        case NoticeKind.PAYMENT_REFUNDED:
            subject = f"Refund for order {order}"
            amount = _written(notice.amount) if notice.amount is not None else "the payment"
            lines = [f"We have refunded {amount} for your order {order}."]
            if notice.payment_id:
                lines.append(f"Payment: {notice.payment_id}")
    return Rendered(_one_line(subject), "\n".join(lines) + "\n")
