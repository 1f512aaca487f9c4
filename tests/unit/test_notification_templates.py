"""What customers are told: money from minor units, one template per event type."""

from __future__ import annotations

from ordermesh_notification.domain import Money, Notice, NoticeKind, NoticeLine
from ordermesh_notification.templates import render


def _notice(kind: NoticeKind, **fields: object) -> Notice:
    return Notice(
        kind,
        "ev-1",
        f"ordermesh.events.v1.{kind.value}",
        order_id="ord-42",
        customer_id="c1",
        **fields,  # type: ignore[arg-type]
    )


def test_a_confirmation_names_the_order_its_lines_and_its_total() -> None:
    rendered = render(
        _notice(
            NoticeKind.ORDER_CONFIRMED,
            amount=Money(2468, "EUR"),
            lines=(NoticeLine("SKU-1", 2, Money(1234, "EUR")),),
        )
    )
    assert rendered.subject == "Order ord-42 confirmed"
    assert "ord-42" in rendered.body
    assert "2 x SKU-1 at 12.34 EUR" in rendered.body
    assert "Total: 24.68 EUR" in rendered.body


def test_a_rejection_gives_the_reason_in_words_with_its_code_and_detail() -> None:
    rendered = render(
        _notice(NoticeKind.ORDER_REJECTED, reason="PAYMENT_DECLINED", reason_detail="card_declined")
    )
    assert rendered.subject == "Order ord-42 could not be completed"
    assert "the payment was declined (PAYMENT_DECLINED): card_declined" in rendered.body


def test_a_rejection_with_an_unknown_reason_still_names_it() -> None:
    rendered = render(_notice(NoticeKind.ORDER_REJECTED, reason="NEW_REASON"))
    assert "NEW_REASON" in rendered.body


def test_a_cancellation_and_a_refund_give_the_amount_in_its_currency() -> None:
    cancelled = render(
        _notice(
            NoticeKind.ORDER_CANCELLED, reason="CANCELLED_BY_CUSTOMER", amount=Money(990, "JPY")
        )
    )
    assert cancelled.subject == "Order ord-42 cancelled"
    assert "990 JPY" in cancelled.body
    refunded = render(_notice(NoticeKind.PAYMENT_REFUNDED, amount=Money(1500, "KWD")))
    assert refunded.subject == "Refund for order ord-42"
    assert "1.500 KWD" in refunded.body


def test_a_subject_stays_on_one_line_whatever_the_order_id_holds() -> None:
    notice = Notice(
        NoticeKind.ORDER_CANCELLED, "ev", "t", order_id="a\r\nBcc: x@evil", customer_id="c"
    )
    assert "\n" not in render(notice).subject
    assert "\r" not in render(notice).subject
