"""The risk event log: payment attempts with the provider's answer, and chargebacks.

One JSON object a line, in time order. Times are integer milliseconds since the epoch,
money integer minor units, so a log replays to the same values on every machine."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

EVENTS_FILE = "events.jsonl"


@dataclass(frozen=True)
class Item:
    sku: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class Attempt:
    """What is known about a payment when it is to be decided: the order and its signals."""

    order_id: str
    at_ms: int
    customer_id: str
    token: str
    device_id: str
    ip: str
    amount_minor: int
    currency: str
    items: tuple[Item, ...]
    billing_country: str
    shipping_country: str
    email_domain: str
    account_created_ms: int

    def as_dict(self) -> dict[str, object]:
        """Its fields as JSON takes them (``dataclasses.asdict`` deep-copies: written for
        every decision, this is the cheap way)."""
        return {**vars(self), "items": [vars(i) for i in self.items]}


@dataclass(frozen=True)
class PaymentOutcome:
    """An attempt and the provider's answer to it."""

    attempt: Attempt
    declined: bool

    @property
    def at_ms(self) -> int:
        return self.attempt.at_ms


@dataclass(frozen=True)
class Chargeback:
    """The issuer took the money back: the label, arriving weeks after the payment."""

    order_id: str
    at_ms: int
    amount_minor: int


Event = PaymentOutcome | Chargeback


def to_json(event: Event) -> dict[str, object]:
    if isinstance(event, Chargeback):
        return {"type": "chargeback", **asdict(event)}
    return {"type": "payment", **event.attempt.as_dict(), "declined": event.declined}


def from_json(line: dict[str, object]) -> Event:
    fields = dict(line)
    kind = fields.pop("type")
    if kind == "chargeback":
        return Chargeback(**fields)  # type: ignore[arg-type]
    declined = bool(fields.pop("declined"))
    items = tuple(Item(**i) for i in fields.pop("items"))  # type: ignore[attr-defined]
    return PaymentOutcome(Attempt(items=items, **fields), declined)  # type: ignore[arg-type]


def write_events(path: Path, events: Iterable[Event]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(to_json(event), separators=(",", ":")) + "\n")
            count += 1
    return count


def read_events(path: Path) -> Iterator[Event]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield from_json(json.loads(line))
