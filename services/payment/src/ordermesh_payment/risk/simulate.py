"""A seeded generator of customers, devices, payment tokens and their payments, with
the fraud patterns of docs/risk.md and the chargebacks that label them weeks later.

Nothing is downloaded: the same seed and settings give the same log, byte for byte."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ordermesh_payment.risk.events import (
    EVENTS_FILE,
    Attempt,
    Chargeback,
    Event,
    Item,
    PaymentOutcome,
    write_events,
)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
CURRENCY = "EUR"

# (sku, unit price in minor units). The resale-prone ones are easy to sell on: fraud
# buys them far more often than customers do.
EVERYDAY_SKUS = (
    ("TEA-SENCHA", 850), ("TEA-ASSAM", 690), ("MUG-STONE", 1400), ("KETTLE-1L", 3900),
    ("BOOK-NOVEL", 1800), ("BOOK-COOK", 2900), ("SOCKS-3", 1200), ("TSHIRT", 2200),
    ("LAMP-DESK", 4500), ("PLANT-POT", 950), ("HEADPHONES", 7900), ("BACKPACK", 6500),
    ("COFFEE-1KG", 2400), ("CANDLE", 1100), ("TOWEL-SET", 3400), ("CHARGER", 1900),
)  # fmt: skip
RESALE_PRONE_SKUS = (
    ("GIFT-CARD-50", 5000), ("GIFT-CARD-100", 10000), ("PHONE-X", 79900),
    ("CONSOLE-S", 49900), ("SNEAKER-LTD", 22000), ("LAPTOP-13", 119900),
)  # fmt: skip
COUNTRIES = ("DE", "FR", "GB", "NL", "ES", "IT", "PL", "SE")
COUNTRY_WEIGHTS = (30, 18, 16, 9, 9, 8, 6, 4)
EMAIL_DOMAINS = ("mail.example", "post.example", "inbox.example", "web.example")
FRAUD_EMAIL_DOMAINS = ("tempbox.example", "mail.example", "web.example")
PATTERN_SHARES = (
    ("card_testing", 0.35),
    ("account_takeover", 0.25),
    ("velocity_abuse", 0.25),
    ("resale", 0.15),
)


@dataclass(frozen=True)
class SimulationSettings:
    orders: int = 5000
    seed: int = 7
    days: int = 60
    fraud_share: float = 0.015  # of all orders
    chargeback_delay_days: tuple[float, float] = (7.0, 45.0)
    legit_decline_rate: float = 0.03  # insufficient funds and the like
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Customer:
    customer_id: str
    created_ms: int
    country: str
    email_domain: str
    usual_items: tuple[str, ...]  # the everyday SKUs this customer tends to buy
    tokens: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    home_ip: str = ""


@dataclass(frozen=True)
class Truth:
    """What the simulator knows and the models never see: which orders were fraud."""

    order_id: str
    pattern: str


class _Ids:
    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def new(self, prefix: str) -> str:
        n = self._next.get(prefix, 0) + 1
        self._next[prefix] = n
        return f"{prefix}-{n:06d}"

    def ip(self) -> str:
        # Addresses from the shared address space 100.64.0.0/10: data only, never dialled.
        n = self._next.get("ip", 0) + 1
        self._next["ip"] = n
        return f"100.{64 + (n >> 16) % 64}.{(n >> 8) % 256}.{n % 256}"


@dataclass(frozen=True)
class _Draft:
    """An attempt before order ids are given out in time order."""

    at_ms: int
    customer_id: str
    token: str
    device_id: str
    ip: str
    items: tuple[Item, ...]
    billing_country: str
    shipping_country: str
    email_domain: str
    account_created_ms: int
    declined: bool
    pattern: str  # "" for a genuine order


class Simulator:
    def __init__(self, settings: SimulationSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.ids = _Ids()
        self.start_ms = int(settings.start.timestamp() * 1000)
        self.end_ms = self.start_ms + settings.days * DAY_MS
        self.customers: list[Customer] = []

    # -- entities ---------------------------------------------------------------------

    def _customer(self, created_ms: int, fraudster: bool = False) -> Customer:
        rng = self.rng
        country = rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
        domains = FRAUD_EMAIL_DOMAINS if fraudster else EMAIL_DOMAINS
        # A customer's taste: a few everyday SKUs, cheap or dear, so each has a usual amount.
        tier = rng.randrange(len(EVERYDAY_SKUS) - 4)
        by_price = sorted(EVERYDAY_SKUS, key=lambda s: s[1])
        usual = tuple(sku for sku, _ in by_price[tier : tier + 5])
        customer = Customer(
            self.ids.new("cust"), created_ms, country, rng.choice(domains), usual,
            home_ip=self.ids.ip(),
        )  # fmt: skip
        customer.tokens.append(self.ids.new("tok"))
        if rng.random() < 0.2:
            customer.tokens.append(self.ids.new("tok"))
        customer.devices.append(self.ids.new("dev"))
        if rng.random() < 0.3:
            customer.devices.append(self.ids.new("dev"))
        return customer

    def _population(self) -> None:
        count = max(50, self.settings.orders // 6)
        for _ in range(count):
            if self.rng.random() < 0.1:  # signs up during the simulated period
                created = self.rng.randrange(self.start_ms, self.end_ms - DAY_MS)
            else:
                created = self.start_ms - self.rng.randrange(DAY_MS, 1000 * DAY_MS)
            self.customers.append(self._customer(created))

    # -- orders -----------------------------------------------------------------------

    def _price(self, sku: str) -> int:
        return dict(EVERYDAY_SKUS + RESALE_PRONE_SKUS)[sku]

    def _items(self, skus: list[str], max_quantity: int = 2) -> tuple[Item, ...]:
        chosen = dict.fromkeys(skus)
        return tuple(
            Item(sku, self.rng.randint(1, max_quantity), self._price(sku)) for sku in chosen
        )

    def _genuine(self, customer: Customer, at_ms: int) -> _Draft:
        rng = self.rng
        skus = [rng.choice(customer.usual_items) for _ in range(rng.choice((1, 1, 2, 3)))]
        if rng.random() < 0.03:  # customers buy phones and gift cards too
            skus.append(rng.choice(RESALE_PRONE_SKUS)[0])
        if rng.random() < 0.03:
            customer.tokens.append(self.ids.new("tok"))  # a new card
            token = customer.tokens[-1]
        else:
            token = rng.choice(customer.tokens)
        if rng.random() < 0.05:
            customer.devices.append(self.ids.new("dev"))  # a new phone
            device = customer.devices[-1]
        else:
            device = rng.choice(customer.devices)
        ip = customer.home_ip if rng.random() < 0.8 else self.ids.ip()
        shipping = customer.country if rng.random() < 0.95 else rng.choice(COUNTRIES)  # gifts
        return _Draft(
            at_ms, customer.customer_id, token, device, ip, self._items(skus),
            customer.country, shipping, customer.email_domain, customer.created_ms,
            rng.random() < self.settings.legit_decline_rate, "",
        )  # fmt: skip

    def _genuine_orders(self, count: int) -> list[_Draft]:
        rng = self.rng
        weights = [rng.paretovariate(1.5) for _ in self.customers]  # a few order a lot
        times = []
        for customer in rng.choices(self.customers, weights, k=count):
            times.append((rng.randrange(max(self.start_ms, customer.created_ms), self.end_ms),
                          customer))  # fmt: skip
        times.sort(key=lambda t: (t[0], t[1].customer_id))
        return [self._genuine(customer, at) for at, customer in times]

    # -- fraud --------------------------------------------------------------------------

    def _card_testing(self, at_ms: int) -> list[_Draft]:
        """Stolen card numbers checked with bursts of small orders, a new token each,
        from one device and address; most are declined."""
        rng = self.rng
        fraudster = self._customer(at_ms - rng.randrange(MINUTE_MS, 2 * HOUR_MS), True)
        device, ip = self.ids.new("dev"), self.ids.ip()
        drafts = []
        for _ in range(rng.randint(5, 14)):
            at_ms += rng.randrange(20_000, 3 * MINUTE_MS)
            sku = rng.choice(("TEA-ASSAM", "TEA-SENCHA", "PLANT-POT", "CANDLE"))
            drafts.append(_Draft(
                at_ms, fraudster.customer_id, self.ids.new("tok"), device, ip,
                (Item(sku, 1, self._price(sku)),), fraudster.country,
                rng.choice(COUNTRIES), fraudster.email_domain, fraudster.created_ms,
                rng.random() < 0.7, "card_testing",
            ))  # fmt: skip
        return drafts

    def _account_takeover(self, at_ms: int) -> list[_Draft]:
        """A customer's account from a new device and address, shipping elsewhere, with
        the saved card: one or two large orders of things that resell."""
        rng = self.rng
        victims = [c for c in self.customers if c.created_ms < at_ms - 30 * DAY_MS]
        victim = rng.choice(victims or self.customers)
        device, ip = self.ids.new("dev"), self.ids.ip()
        shipping = rng.choice([c for c in COUNTRIES if c != victim.country])
        drafts = []
        for _ in range(rng.choice((1, 1, 2))):
            skus = [rng.choice(RESALE_PRONE_SKUS)[0] for _ in range(rng.randint(1, 2))]
            drafts.append(_Draft(
                at_ms, victim.customer_id, victim.tokens[0], device, ip,
                self._items(skus, 3), victim.country, shipping, victim.email_domain,
                victim.created_ms, rng.random() < 0.05, "account_takeover",
            ))  # fmt: skip
            at_ms += rng.randrange(5 * MINUTE_MS, 50 * MINUTE_MS)
        return drafts

    def _velocity_abuse(self, at_ms: int) -> list[_Draft]:
        """A fresh account spending fast on several cards within a few hours."""
        rng = self.rng
        fraudster = self._customer(at_ms - rng.randrange(HOUR_MS, 3 * DAY_MS), True)
        tokens = [self.ids.new("tok") for _ in range(rng.randint(2, 5))]
        device, ip = fraudster.devices[0], fraudster.home_ip
        drafts = []
        for _ in range(rng.randint(4, 10)):
            at_ms += rng.randrange(3 * MINUTE_MS, 30 * MINUTE_MS)
            skus = [rng.choice(EVERYDAY_SKUS)[0] for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.5:
                skus.append(rng.choice(RESALE_PRONE_SKUS[:2])[0])  # gift cards
            drafts.append(_Draft(
                at_ms, fraudster.customer_id, rng.choice(tokens), device, ip,
                self._items(skus, 3), fraudster.country, fraudster.country,
                fraudster.email_domain, fraudster.created_ms, rng.random() < 0.1,
                "velocity_abuse",
            ))  # fmt: skip
        return drafts

    def _resale(self, at_ms: int) -> list[_Draft]:
        """One order, from a new account with a new card, of several resale-prone items."""
        rng = self.rng
        fraudster = self._customer(at_ms - rng.randrange(MINUTE_MS, 7 * DAY_MS), True)
        skus = [rng.choice(RESALE_PRONE_SKUS)[0] for _ in range(rng.randint(1, 3))]
        shipping = rng.choice(COUNTRIES) if rng.random() < 0.6 else fraudster.country
        return [_Draft(
            at_ms, fraudster.customer_id, fraudster.tokens[0], fraudster.devices[0],
            fraudster.home_ip, self._items(skus, 4), fraudster.country, shipping,
            fraudster.email_domain, fraudster.created_ms, rng.random() < 0.1, "resale",
        )]  # fmt: skip

    def _fraud_orders(self, budget: int) -> list[_Draft]:
        patterns = {
            "card_testing": self._card_testing,
            "account_takeover": self._account_takeover,
            "velocity_abuse": self._velocity_abuse,
            "resale": self._resale,
        }
        drafts: list[_Draft] = []
        for pattern, share in PATTERN_SHARES:  # each pattern its share of the fraud orders
            wanted = round(budget * share)
            made: list[_Draft] = []
            while len(made) < wanted:
                at = self.rng.randrange(self.start_ms + DAY_MS, self.end_ms - DAY_MS)
                made.extend(patterns[pattern](at)[: wanted - len(made)])
            drafts.extend(made)
        return drafts

    # -- the log ------------------------------------------------------------------------

    def run(self) -> tuple[list[Event], list[Truth]]:
        """The time-ordered log (attempts and chargebacks) and the fraud truth."""
        self._population()
        fraud_budget = round(self.settings.orders * self.settings.fraud_share)
        # Fraud first: its entities are new, so drawing them does not depend on
        # how many genuine orders came before.
        fraud = self._fraud_orders(fraud_budget)
        drafts = self._genuine_orders(self.settings.orders - len(fraud)) + fraud
        drafts.sort(key=lambda d: (d.at_ms, d.customer_id, d.token))
        events: list[tuple[int, int, Event]] = []
        truth: list[Truth] = []
        low, high = self.settings.chargeback_delay_days
        for seq, draft in enumerate(drafts, start=1):
            order_id = f"ord-{seq:07d}"
            attempt = Attempt(
                order_id, draft.at_ms, draft.customer_id, draft.token, draft.device_id,
                draft.ip, sum(i.quantity * i.unit_price_minor for i in draft.items), CURRENCY,
                draft.items, draft.billing_country, draft.shipping_country,
                draft.email_domain, draft.account_created_ms,
            )  # fmt: skip
            events.append((draft.at_ms, 0, PaymentOutcome(attempt, draft.declined)))
            if not draft.pattern:
                continue
            truth.append(Truth(order_id, draft.pattern))
            if not draft.declined:  # only money that moved can be charged back
                delay = math.floor(self.rng.uniform(low, high) * DAY_MS)
                back = Chargeback(order_id, draft.at_ms + delay, attempt.amount_minor)
                events.append((back.at_ms, 1, back))
        events.sort(key=lambda e: (e[0], e[1]))
        return [event for _, _, event in events], truth


def simulate(settings: SimulationSettings, out: Path) -> dict[str, object]:
    """Write events.jsonl, truth.jsonl and summary.json into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    events, truth = Simulator(settings).run()
    write_events(out / EVENTS_FILE, events)
    with (out / "truth.jsonl").open("w", encoding="utf-8") as lines:
        for t in truth:
            lines.write(json.dumps(asdict(t)) + "\n")
    summary = _summary(settings, events, truth)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _summary(
    settings: SimulationSettings, events: list[Event], truth: list[Truth]
) -> dict[str, object]:
    payments = [e for e in events if isinstance(e, PaymentOutcome)]
    by_pattern: dict[str, int] = {}
    for t in truth:
        by_pattern[t.pattern] = by_pattern.get(t.pattern, 0) + 1
    return {
        "seed": settings.seed,
        "orders": len(payments),
        "fraud_orders": len(truth),
        "fraud_share": round(len(truth) / max(1, len(payments)), 4),
        "by_pattern": dict(sorted(by_pattern.items())),
        "declined": sum(p.declined for p in payments),
        "chargebacks": sum(isinstance(e, Chargeback) for e in events),
        "customers": len({p.attempt.customer_id for p in payments}),
    }
