"""The checks every fuzz suite runs against each RPC of its service."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import grpc
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import ALLOWED_CODES, FUZZ, Mesh, Rpc, assert_allowed
from tests.fuzz.strategies import OVERSIZE, arbitrary_request, messages, spoiled, stuffed

# Bytes no protobuf parser accepts, whatever the message type.
UNDECODABLE = (
    b"\xff",  # a tag whose varint never ends
    b"\x08",  # field 1, varint, then nothing
    b"\x0a\x05ab",  # field 1, 5 bytes announced, 2 sent
    b"\x0a\x02\xc3\x28",  # field 1 (a string or a message), not UTF-8 nor a message
    b"\x07",  # wire type 7 does not exist
    b"\x00",  # field number 0 does not exist
    b"\x0b",  # a group that never ends
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # an 11-byte varint
)


def any_request(mesh: Mesh, rpc: Rpc, data: st.DataObject) -> None:
    """Whatever a well-formed message holds, the answer is a documented status."""
    request = data.draw(arbitrary_request(rpc.method.input_type), label="request")
    code, _ = mesh.call(rpc, request)
    assert_allowed(rpc, code, request)


def sweep(
    mesh: Mesh,
    rpc: Rpc,
    valid: Message,
    fresh: str = "",
    extra: Mapping[str, tuple[object, ...]] | None = None,
) -> None:
    """A valid request with each of its fields spoiled in turn (one at a time, so that
    the others let it reach the use case and the database): always a documented status.
    ``fresh`` names an id field given a new value for each call (an idempotency key),
    so that the calls do not replay each other."""
    code, _ = mesh.call(rpc, valid)
    assert code == grpc.StatusCode.OK, f"the valid {rpc.name} request answered {code.name}"
    wrong = []
    for i, (change, request) in enumerate(spoiled(valid, extra)):
        if fresh and not change.startswith(fresh):
            setattr(request, fresh, f"sweep-{uuid.uuid4().hex[:12]}-{i}")
        code, _ = mesh.call(rpc, request)
        if code not in ALLOWED_CODES:
            wrong.append(f"{change}: {code.name}")
    assert not wrong, f"{rpc.name} answered undocumented statuses: {wrong}"


def oversize(mesh: Mesh, rpc: Rpc) -> None:
    """A message over the limit is refused by gRPC before any handler sees it."""
    empty = rpc.request_type()
    code, _ = mesh.call(rpc, stuffed(empty))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code.name
    code = mesh.call_raw(rpc, b"\xff" * OVERSIZE)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code.name


def undecodable(mesh: Mesh, rpc: Rpc) -> None:
    """Bytes that are no protobuf message at all are a malformed request."""
    answers = {data: mesh.call_raw(rpc, data) for data in UNDECODABLE}
    named = {data: code.name for data, code in answers.items()}
    assert set(answers.values()) == {grpc.StatusCode.INVALID_ARGUMENT}, named


def raw(mesh: Mesh, rpc: Rpc, data: st.DataObject) -> None:
    """Whatever bytes arrive (any bytes, or a real message with a byte changed and its
    end cut off), the answer is a documented status."""
    mangled = st.builds(
        _mangle,
        messages(rpc.method.input_type, compact=True).map(lambda m: m.SerializeToString()),
        st.integers(0, 8),
        st.integers(0, 2**16),
        st.integers(0, 255),
    )
    request = data.draw(st.one_of(st.binary(max_size=512), mangled), label="bytes")
    assert_allowed(rpc, mesh.call_raw(rpc, request), request)


def _mangle(serialized: bytes, cut: int, flip: int, value: int) -> bytes:
    """A serialized message with one byte replaced and up to ``cut`` bytes cut off."""
    if not serialized:
        return bytes([value])
    at = flip % len(serialized)
    changed = serialized[:at] + bytes([value]) + serialized[at + 1 :]
    return changed[: max(1, len(changed) - cut)]


class ServiceContract:
    """The six checks every RPC of one service gets. A fuzz module subclasses it once
    (``Test<Service>``), names its RPCS and says how to build near-valid and valid
    requests; tests/fuzz/conftest.py runs each check once per RPC. ``context`` is the
    module's ``context`` fixture: what was seeded before the fuzzing, if anything."""

    RPCS: ClassVar[Sequence[Rpc]] = ()
    # Per RPC: its near-valid strategy, and one valid request for the sweep with the id
    # field it keeps fresh ("" for none, see ``sweep``). A suite whose requests depend
    # on what it seeded overrides near_valid and valid instead.
    NEAR_VALID: ClassVar[Mapping[str, Callable[[], st.SearchStrategy[Message]]]] = {}
    VALID: ClassVar[Mapping[str, tuple[Message, str]]] = {}
    EXTRA: ClassVar[Mapping[str, tuple[object, ...]] | None] = None  # for the sweep

    def near_valid(self, rpc: str, context: Any) -> st.SearchStrategy[Message]:
        return self.NEAR_VALID[rpc]()

    def valid(self, rpc: str, context: Any) -> Sequence[tuple[Message, str]]:
        """Valid requests for the sweep, each with the id field it keeps fresh."""
        return [self.VALID[rpc]]

    @FUZZ
    @given(data=st.data())
    def test_any_request_gets_a_documented_status(
        self, mesh: Mesh, rpc: Rpc, data: st.DataObject
    ) -> None:
        any_request(mesh, rpc, data)

    @FUZZ
    @given(data=st.data())
    def test_near_valid_requests_get_a_documented_status(
        self, mesh: Mesh, context: Any, rpc: Rpc, data: st.DataObject
    ) -> None:
        request = data.draw(self.near_valid(rpc.name, context), label="request")
        code, _ = mesh.call(rpc, request)
        assert_allowed(rpc, code, request)

    def test_each_field_of_a_valid_request_spoiled_in_turn(
        self, mesh: Mesh, context: Any, rpc: Rpc
    ) -> None:
        for request, fresh in self.valid(rpc.name, context):
            sweep(mesh, rpc, request, fresh, self.EXTRA)

    def test_a_message_over_the_limit_is_resource_exhausted(self, mesh: Mesh, rpc: Rpc) -> None:
        oversize(mesh, rpc)

    def test_undecodable_bytes_are_invalid_argument(self, mesh: Mesh, rpc: Rpc) -> None:
        undecodable(mesh, rpc)

    @FUZZ
    @given(data=st.data())
    def test_any_bytes_get_a_documented_status(
        self, mesh: Mesh, rpc: Rpc, data: st.DataObject
    ) -> None:
        raw(mesh, rpc, data)
