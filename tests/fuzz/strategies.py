"""Hypothesis strategies for hostile requests.

``arbitrary_request(descriptor)`` is the one strategy every RPC gets: it fills any
message from its descriptor, recursively, with edge-case-heavy values: int32/int64
extremes and the service's boundaries (0, 1, 50/51, 100/101, 1000/1001, 10**9,
MAX_AMOUNT_MINOR, ...), any valid UTF-8 text (NUL included; protobuf strings cannot
hold surrogates), strings of 64/65 ... 100_000 characters, repeated fields of up to
5000 items, unknown enum numbers, and now and then a message over the 4 MiB limit.

``near_valid(build, **fields)`` makes requests whose fields are all valid, or all but
one, from ``Field`` pairs (what is valid, what is not: ``skus``, ``amounts``, ...), so
that the one bad value reaches the use case, the database and the saga. ``spoiled``
does the same deterministically: a valid request with each field spoiled in turn.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Generic, TypeVar, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from ordermesh_platform.money import MAX_AMOUNT_MINOR
from tests.fuzz.harness import MESSAGE_LIMIT_BYTES

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# The boundaries of every rule in the services, and both sides of them.
_BOUNDARIES = (
    0, 1, 2, 49, 50, 51, 63, 64, 65, 99, 100, 101, 127, 128, 129, 255, 256, 257,
    999, 1000, 1001, 86_400, 86_401, 999_999_999, 10**9, 10**9 + 1,
    MAX_AMOUNT_MINOR - 1, MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR + 1,
    2**31 - 1, 2**31, 2**32, 2**53 + 1, 315_576_000_000, 315_576_000_001,
    2**62, 2**63 - 1,
)  # fmt: skip
INTERESTING_INTS = tuple(sorted({*_BOUNDARIES, *(-x for x in _BOUNDARIES), -(2**63)}))

# Strings worth trying in any field: the valid values the services know, and their
# near misses (case, whitespace, control characters, lookalikes, injection).
SPECIAL_STRINGS = (
    "", " ", "\x00", "A\x00", "\x00A", "\n", "A\n", "\t", "\r\n", "\x7f", "\u0085",
    "\u00a0", "\u200b", "\u202e", "\u2028", "\ufeff", "\ufffd", "\U0010ffff", "😀",
    "Ω", "ü", "Å", "İ", "ß", "A", "a", "0", "-", ".", "..", "_", "%", "*", "?",
    "\\", '"', "'", "'; DROP TABLE orders; --", "%s", "{0}", "${x}", "null", "None",
    "EUR", "eur", "Eur", "USD", "JPY", "XXX", "XAU", "EURO", "EU", "€",
    "FZ-A", "FZ-B", "TEA-SENCHA", "tok_ok", "tok_decline", "tok_insufficient_funds",
    "tok_flaky", "tok_timeout", "c1", "customer-1", "order-1",
    "00000000-0000-0000-0000-000000000000", "a@b", "a@", "@", "x@example.com",
    "https://example.com/hook", "http://", "https:///x", "http://x", "HTTP://X",
    " https://x", "https://x\n", "javascript:alert(1)", "file:///etc/passwd",
    "=", "==", "e30=", "bnVsbA==", "W10=", "!!!", "AAAA",
)  # fmt: skip
LONG_LENGTHS = (
    63, 64, 65, 127, 128, 129, 253, 254, 255, 256, 257, 511, 512, 513,
    1000, 1001, 2047, 2048, 2049, 4096, 100_000,
)  # fmt: skip
SHORT_LENGTHS = tuple(n for n in LONG_LENGTHS if n <= 513)
MANY = (51, 100, 101, 999, 1000, 1001, 2000, 5000)
UNKNOWN_ENUM_NUMBERS = (-1, 7, 99, 2**31 - 1, -(2**31))
OVERSIZE = MESSAGE_LIMIT_BYTES + 1024
M = TypeVar("M", bound=Message)
T = TypeVar("T")


def fill(seed: str, length: int) -> str:
    """``seed`` repeated to exactly ``length`` characters: long strings for free."""
    return (seed * (length // len(seed) + 1))[:length]


def ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted(
        {x for x in (*INTERESTING_INTS, low, high, low + 1, high - 1) if low <= x <= high}
    )
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def strings(compact: bool = False) -> st.SearchStrategy[str]:
    """Any valid text. ``compact`` keeps it to 513 characters (inside big lists)."""
    lengths = SHORT_LENGTHS if compact else LONG_LENGTHS
    return st.one_of(
        st.sampled_from(SPECIAL_STRINGS),
        st.text(max_size=20),
        st.builds(fill, st.text(min_size=1, max_size=3), st.sampled_from(lengths)),
    )


def enums(enum: EnumDescriptor) -> st.SearchStrategy[int]:
    known = sorted(v.number for v in enum.values)
    return st.sampled_from([*known, max(known) + 1, *UNKNOWN_ENUM_NUMBERS])


def _scalar(field: FieldDescriptor, compact: bool) -> st.SearchStrategy[object]:
    t = FieldDescriptor
    kind = field.type
    if kind == t.TYPE_STRING:
        return strings(compact)
    if kind == t.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == t.TYPE_BOOL:
        return st.booleans()
    if kind == t.TYPE_ENUM:
        assert field.enum_type is not None
        return enums(field.enum_type)
    if kind in (t.TYPE_INT32, t.TYPE_SINT32, t.TYPE_SFIXED32):
        return ints(*INT32)
    if kind in (t.TYPE_INT64, t.TYPE_SINT64, t.TYPE_SFIXED64):
        return ints(*INT64)
    if kind in (t.TYPE_UINT32, t.TYPE_FIXED32):
        return ints(*UINT32)
    if kind in (t.TYPE_UINT64, t.TYPE_FIXED64):
        return ints(*UINT64)
    if kind in (t.TYPE_FLOAT, t.TYPE_DOUBLE):
        return st.floats(width=32 if kind == t.TYPE_FLOAT else 64)
    raise NotImplementedError(f"{field.full_name}: field type {kind}")


def _single(field: FieldDescriptor, compact: bool, depth: int) -> st.SearchStrategy[object]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, compact, depth + 1)
    return _scalar(field, compact)


def _repeat(items: list[T], count: int) -> list[T]:
    return (items * (count // len(items) + 1))[:count]


def _field(field: FieldDescriptor, compact: bool, depth: int) -> st.SearchStrategy[object]:
    if not field.is_repeated:
        return _single(field, compact, depth)
    item = _single(field, True, depth)
    few = st.lists(item, max_size=4)
    if compact:
        return few
    many = st.builds(_repeat, st.lists(item, min_size=1, max_size=3), st.sampled_from(MANY))
    return st.one_of(few, many)


@functools.cache
def messages(
    descriptor: Descriptor, compact: bool = False, depth: int = 0
) -> st.SearchStrategy[Message]:
    """Messages of any shape: each field unset or set to a hostile value."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 4:
        return st.just(cls())
    optional = {f.name: _field(f, compact, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda fields: cls(**fields))


def stuffed(message: Message) -> Message:
    """A copy made larger than the message limit through its first string field."""
    copy = type(message)()
    copy.CopyFrom(message)
    assert _stuff(copy), f"{message.DESCRIPTOR.full_name} has no string field"
    return copy


def _stuff(message: Message) -> bool:
    big = fill("x", OVERSIZE)
    fields = message.DESCRIPTOR.fields
    for f in fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            if f.is_repeated:
                getattr(message, f.name).append(big)
            else:
                setattr(message, f.name, big)
            return True
    for f in fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            inner = getattr(message, f.name).add() if f.is_repeated else getattr(message, f.name)
            if _stuff(inner):
                return True
    return False


@st.composite
def arbitrary_request(draw: st.DrawFn, descriptor: Descriptor) -> Message:
    """One strategy for every RPC: any message of the request type, one in 40 of them
    made larger than the 4 MiB limit."""
    message = draw(messages(descriptor))
    if draw(st.integers(0, 39)) == 39:
        return stuffed(message)
    return message


# -- every field of a valid request spoiled in turn ---------------------------------------

SWEEP_STRINGS = (
    "", " ", "\x00", "a\x00", "\n", "A\n", "\u202e", "😀", "EUR", "eur", "XXX",
    fill("x", 65), fill("x", 129), fill("x", 257), fill("x", 513), fill("x", 2049),
    fill("é", 255), fill("x", 100_000),
)  # fmt: skip
SWEEP_INTS = (0, 1, -1, 50, 51, 100, 101, 1000, 1001, 2**31 - 1, -(2**31))
SWEEP_INT64S = (*SWEEP_INTS, 10**9 + 1, MAX_AMOUNT_MINOR + 1, 86_401, 2**63 - 1, -(2**63))


def _sweep_values(field: FieldDescriptor) -> tuple[object, ...]:
    t = FieldDescriptor
    if field.type == t.TYPE_STRING:
        return SWEEP_STRINGS
    if field.type == t.TYPE_BOOL:
        return (True, False)
    if field.type == t.TYPE_ENUM:
        return UNKNOWN_ENUM_NUMBERS
    if field.type in (t.TYPE_INT64, t.TYPE_SINT64, t.TYPE_SFIXED64):
        return SWEEP_INT64S
    if field.type in (t.TYPE_INT32, t.TYPE_SINT32, t.TYPE_SFIXED32):
        return SWEEP_INTS
    return ()


def spoiled(
    valid: Message, extra: Mapping[str, tuple[object, ...]] | None = None
) -> Iterator[tuple[str, Message]]:
    """Copies of a valid request with one field changed to a hostile value each: every
    scalar (of sub-messages and of the first item of repeated ones too), every repeated
    field emptied and made 1001 long, every sub-message cleared; and the ``extra``
    values given for a field path ("preferences.email")."""
    fields = valid.DESCRIPTOR.fields_by_name
    extras = [
        (path, value)
        for path, values in (extra or {}).items()
        if path.partition(".")[0].partition("[")[0] in fields  # paths of this request only
        for value in values
    ]
    for path, value in [*_spoilers(cast(Descriptor, valid.DESCRIPTOR), ""), *extras]:
        copy = type(valid)()
        copy.CopyFrom(valid)
        _apply(copy, path, value)
        yield f"{path}={_summary(value)}", copy


def _spoilers(descriptor: Descriptor, prefix: str) -> Iterator[tuple[str, object]]:
    for f in descriptor.fields:
        path = f"{prefix}{f.name}"
        if f.is_repeated:
            yield path, []
            yield path, 1001
            if f.message_type is not None:
                yield from _spoilers(f.message_type, f"{path}[0].")
            else:
                for value in _sweep_values(f):
                    yield f"{path}[0]", value
        elif f.message_type is not None:
            yield path, None
            yield from _spoilers(f.message_type, f"{path}.")
        else:
            for value in _sweep_values(f):
                yield path, value


def _apply(message: Message, path: str, value: object) -> None:
    head, _, rest = path.partition(".")
    name, _, index = head.partition("[")
    field = cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[name])
    target = getattr(message, name)
    if rest:  # into a sub-message, or the first item of a repeated one
        inner = (target[0] if len(target) else target.add()) if index else target
        _apply(inner, rest, value)
    elif index:  # the first item of a repeated scalar
        if len(target):
            target[0] = value
        else:
            target.append(value)
    elif field.is_repeated:
        if value == []:
            del target[:]
        else:  # as many items as asked, copies of the first (or defaults)
            count = int(cast(int, value))
            first = list(target[:1])
            del target[:]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for _ in range(count):
                    item = target.add()
                    if first:
                        item.CopyFrom(first[0])
            else:
                target.extend(_repeat(first or [_sweep_values(field)[0]], count))
    elif value is None:
        message.ClearField(name)
    else:
        setattr(message, name, value)


def _summary(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} chars)"


# -- near-valid requests ------------------------------------------------------------------
#
# A near-valid request has every field valid, or all but one, so that it gets past
# the other fields' checks and takes its one bad value (or none) to the use case, the
# database and the saga. Each building block is a Field: what is valid, what is not.

SKU_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"


@dataclass(frozen=True)
class Field(Generic[T]):
    valid: st.SearchStrategy[T]
    hostile: st.SearchStrategy[T]


@st.composite
def _near_valid(
    draw: st.DrawFn, build: Callable[..., M], fields: dict[str, Field[Any]], spoil: bool
) -> M:
    values = {name: draw(field.valid) for name, field in fields.items()}
    # Unless told to spoil one, half of the requests are entirely valid.
    choices: list[str | None] = list(fields)
    if not spoil:
        choices += [None] * len(fields)
    spoiled = draw(st.sampled_from(choices))
    if spoiled is not None:
        values[spoiled] = draw(fields[spoiled].hostile)
    return build(**values)


def near_valid(build: Callable[..., M], **fields: Field[Any]) -> st.SearchStrategy[M]:
    """``build(**fields)`` with every field valid, or all but one."""
    return _near_valid(build, fields, spoil=False)


def sub_message(build: Callable[..., M], **fields: Field[Any]) -> Field[M]:
    """A sub-message as a field: valid, or with exactly one bad field."""
    valid = st.builds(build, **{name: field.valid for name, field in fields.items()})
    return Field(valid, _near_valid(build, fields, spoil=True))


def or_unset(field: Field[M], unset_is_valid: bool = False) -> Field[M | None]:
    """A message field that may also be left unset (valid or not, as the RPC says)."""
    if unset_is_valid:
        return Field(st.one_of(st.none(), field.valid), field.hostile)
    return Field(field.valid, st.one_of(st.none(), field.hostile))


def lists_of(
    item: Field[T],
    max_valid: int = 4,
    many: tuple[int, ...] = MANY,
    unique_by: Callable[[T], object] | None = None,
) -> Field[list[T]]:
    """Valid: 1 to ``max_valid`` valid items. Hostile: none, thousands, or one bad item."""
    if unique_by is None:
        valid = st.lists(item.valid, min_size=1, max_size=max_valid)
    else:
        valid = st.lists(item.valid, min_size=1, max_size=max_valid, unique_by=unique_by)
    hostile = st.one_of(
        st.just([]),
        st.builds(_repeat, st.lists(item.valid, min_size=1, max_size=2), st.sampled_from(many)),
        st.builds(lambda good, bad, at: [*good[:at], bad, *good[at:]], valid, item.hostile,
                  st.integers(0, max_valid)),
    )  # fmt: skip
    return Field(valid, hostile)


def skus(known: tuple[str, ...] = ()) -> Field[str]:
    """SKUs the catalogue knows (else any valid SKU), and near misses."""
    valid = st.sampled_from(known) if known else st.text(SKU_ALPHABET, min_size=1, max_size=64)
    hostile = st.one_of(
        st.sampled_from(
            [fill("S", 64), fill("S", 65), "", "A\n", "A\r", "\nA", " A", "A ", "A\x00", "A/B",
             "A:B", "Å", "\uff21\uff22", "A\u200b", "A\t", "*", "%", "A,B",
             *(sku + "\n" for sku in known), *(sku.lower() for sku in known)]
        ),
        st.text(SKU_ALPHABET, min_size=1, max_size=64),
        strings(compact=True),
    )  # fmt: skip
    return Field(valid, hostile)


def currencies(valid: tuple[str, ...] = ("EUR",)) -> Field[str]:
    hostile = st.sampled_from(
        ["USD", "JPY", "eur", "", "XXX", "XAU", "EURO", "EU", "EUR\n", " EUR", "€", "E\x00R"]
    )
    return Field(st.sampled_from(valid), hostile)


def amounts() -> Field[int]:
    """Money in minor units around every boundary: 0, 1, MAX_AMOUNT_MINOR and past it."""
    valid = st.one_of(st.sampled_from([1, MAX_AMOUNT_MINOR]), st.integers(1, 100_000))
    hostile = st.one_of(
        st.sampled_from([0, -1, MAX_AMOUNT_MINOR + 1, -MAX_AMOUNT_MINOR, 2**62, 2**63 - 1,
                         -(2**63)]),
        ints(*INT64),
    )  # fmt: skip
    return Field(valid, hostile)


def quantities() -> Field[int]:
    valid = st.one_of(st.sampled_from([1, 2, 1000]), st.integers(1, 1000))
    hostile = st.one_of(st.sampled_from([0, 1001, -1, 2**31 - 1, -(2**31)]), ints(*INT32))
    return Field(valid, hostile)


def identifiers(pool: tuple[str, ...] = (), max_length: int = 128) -> Field[str]:
    """Ids from a small pool (so that calls meet each other's state) or fresh ones, and
    near misses: empty, too long, NUL, control and invisible characters."""
    fresh = st.text(SKU_ALPHABET, min_size=1, max_size=min(max_length, 40))
    valid = st.one_of(st.sampled_from(pool), st.sampled_from(pool), fresh) if pool else fresh
    hostile = st.one_of(
        st.sampled_from(
            ["", " ", "\x00", "a\x00b", "\n", "a\n", "\u202e", "\ufeff", "\x7f",
             fill("i", max_length + 1), fill("😀", max_length + 1)]
        ),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=max_length + 1),
        strings(),
    )  # fmt: skip
    return Field(valid, hostile)


def texts(max_length: int, min_length: int = 0) -> Field[str]:
    """Free text (a name, a note): any text of the right length, or not."""
    no_nul = st.characters(codec="utf-8", exclude_characters="\x00")
    valid = st.text(no_nul, min_size=min_length, max_size=min(max_length, 40))
    hostile = st.one_of(
        st.sampled_from(["\x00", "a\x00", fill("n", max_length + 1), fill("😀", max_length + 1)]),
        strings(),
    )
    return Field(valid, hostile)


def page_sizes() -> Field[int]:
    valid = st.one_of(st.sampled_from([0, 1, 2, 100]), st.integers(0, 100))
    hostile = st.one_of(st.sampled_from([101, -1, 2**31 - 1, -(2**31)]), ints(*INT32))
    return Field(valid, hostile)


def _b64(raw: bytes, padded: bool) -> str:
    token = base64.urlsafe_b64encode(raw).decode()
    return token if padded else token.rstrip("=")


_TIMEZONES = st.one_of(
    st.none(),
    st.just(UTC),
    st.builds(
        timezone,
        st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
    ),
)
_TIMES = st.one_of(
    st.datetimes(timezones=_TIMEZONES).map(datetime.isoformat),
    st.sampled_from(
        ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00", "0001-01-01",
         "9999-12-31T23:59:59.999999-23:59", "9999-12-31T23:59:59+14:00", "2024-02-30T00:00:00",
         "2024-01-01T00:00:00", "2024-01-01T00:00:00Z", "", "now"]
    ),
    strings(compact=True),
)  # fmt: skip
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_JSON = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.text(), st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2)), max_size=3),
)


def page_tokens(valid: tuple[str, ...] = ()) -> Field[str]:
    """Page tokens: none or real ones; forged ones that decode (odd times, odd ids,
    JSON nested 100_000 deep), and junk."""
    forged_payload = st.one_of(
        st.fixed_dictionaries({"t": _TIMES, "id": st.one_of(strings(compact=True), _JSON)}),
        st.fixed_dictionaries({"t": _JSON, "id": _JSON}),
        _JSON,
    )
    forged = st.builds(
        lambda payload, padded: _b64(json.dumps(payload).encode(), padded),
        forged_payload,
        st.booleans(),
    )
    junk = st.one_of(
        st.sampled_from([_b64(b"[" * 100_000, True), _b64(b'{"t": ' * 50_000, True)]),
        strings(),
        st.builds(_b64, st.binary(max_size=64), st.booleans()),
        st.builds(lambda s: _b64(s.encode("utf-8"), True), strings(compact=True)),
    )
    return Field(st.sampled_from(("", *valid)), st.one_of(forged, forged, junk))
