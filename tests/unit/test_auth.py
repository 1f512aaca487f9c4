"""Caller authentication (tokens, service certificates), the policy tables, the
ownership check, and the errors they raise."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import descriptor
from google.rpc import error_details_pb2, status_pb2

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh.inventory.v1 import inventory_pb2
from ordermesh.notification.v1 import notification_pb2
from ordermesh.order.v1 import order_pb2
from ordermesh.payment.v1 import payment_pb2
from ordermesh_inventory.api import POLICY as INVENTORY_POLICY
from ordermesh_notification.api import POLICY as NOTIFICATION_POLICY
from ordermesh_order.api import POLICY as ORDER_POLICY
from ordermesh_payment.api import POLICY as PAYMENT_POLICY
from ordermesh_platform.auth import (
    ADMIN_SCOPE,
    INTERNAL,
    Authenticator,
    Principal,
    TokenError,
    TokenSettings,
    TokenVerifier,
    current_principal,
    require_owner,
    reset_principal,
    scopes_of,
    service_identity,
    set_principal,
)
from ordermesh_platform.devcerts import ensure_jwt_keys, mint_token
from ordermesh_platform.errors import PermissionDenied, Unauthenticated
from ordermesh_platform.grpc_errors import to_grpc_status
from ordermesh_platform.policy import Policy
from ordermesh_platform.signing_keys import KeyFile

ORDER = "/ordermesh.order.v1.OrderService/"
INVENTORY = "/ordermesh.inventory.v1.InventoryService/"
PAYMENT = "/ordermesh.payment.v1.PaymentService/"
NOTIFICATION = "/ordermesh.notification.v1.NotificationService/"

ALICE = Principal(subject="alice")
BOB = Principal(subject="bob")
ADMIN = Principal(subject="ops", scopes=frozenset({ADMIN_SCOPE}))
ORDER_SVC = Principal(service="order")
PAYMENT_SVC = Principal(service="payment")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_jwt_keys(tmp_path / "auth")


def verifier(public: Path, **kw: Any) -> TokenVerifier:
    settings = {"public_key_file": str(public), "audience": "ordermesh", "issuer": "ordermesh-dev"}
    return TokenVerifier(TokenSettings(**{**settings, **kw}))


# --- tokens ----------------------------------------------------------------------------


async def test_a_valid_token_gives_its_subject_and_scopes(keys: tuple[Path, Path]) -> None:
    private, public = keys
    principal = await verifier(public).verify(mint_token(private, "alice", [ADMIN_SCOPE, "other"]))
    assert principal.subject == "alice"
    assert principal.scopes == {ADMIN_SCOPE, "other"}
    assert principal.is_admin


@pytest.mark.parametrize(
    ("mint", "reason"),
    [
        ({"ttl_s": -120}, "TOKEN_EXPIRED"),
        ({"audience": "someone-else"}, "TOKEN_NOT_FOR_US"),
        ({"issuer": "evil-idp"}, "TOKEN_NOT_FOR_US"),
    ],
)
async def test_expired_and_foreign_tokens_are_refused(
    keys: tuple[Path, Path], mint: dict[str, Any], reason: str
) -> None:
    private, public = keys
    with pytest.raises(TokenError) as raised:
        await verifier(public).verify(mint_token(private, "alice", **mint))
    assert ErrorReason.Name(raised.value.reason) == reason


async def test_a_token_signed_by_another_key_is_refused(
    keys: tuple[Path, Path], tmp_path: Path
) -> None:
    other_private, _ = ensure_jwt_keys(tmp_path / "other")
    with pytest.raises(TokenError) as raised:
        await verifier(keys[1]).verify(mint_token(other_private, "alice"))
    assert raised.value.reason == ErrorReason.TOKEN_INVALID


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


async def test_unsigned_and_hmac_confusion_tokens_are_refused(keys: tuple[Path, Path]) -> None:
    claims = {
        "sub": "alice",
        "exp": int(time.time()) + 60,
        "aud": "ordermesh",
        "iss": "ordermesh-dev",
    }
    unsigned = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    # The public key used as an HMAC secret: the classic algorithm-confusion attack
    # (built by hand: PyJWT itself refuses to make one).
    signing_input = b".".join(
        _b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "typ": "JWT"}, claims)
    )
    mac = hmac.new(keys[1].read_bytes(), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + _b64(mac)).decode()
    for token in (unsigned, forged, "not-a-jwt"):
        with pytest.raises(TokenError) as raised:
            await verifier(keys[1]).verify(token)
        assert raised.value.reason == ErrorReason.TOKEN_INVALID, token


async def test_a_token_without_subject_is_refused(keys: tuple[Path, Path]) -> None:
    key = serialization.load_pem_private_key(keys[0].read_bytes(), None)
    claims = {"exp": int(time.time()) + 60, "aud": "ordermesh", "iss": "ordermesh-dev"}
    token = jwt.encode(claims, key, algorithm="ES256")  # type: ignore[arg-type]
    with pytest.raises(TokenError) as raised:
        await verifier(keys[1]).verify(token)
    assert raised.value.reason == ErrorReason.TOKEN_INVALID


def _jwk(public_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    data: dict[str, Any] = json.loads(algorithm.to_jwk(public_key))
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


async def test_jwks_picks_the_key_by_kid_and_follows_rotation(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(rsa_key.public_key(), "k1", "RS256")]}))
    settings = TokenSettings(jwks_file=str(jwks), audience="ordermesh")
    check = TokenVerifier(settings, KeyFile(jwks, jwks=True, recheck_s=0.0))
    claims = {"sub": "alice", "exp": int(time.time()) + 60, "aud": "ordermesh"}
    first = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "k1"})
    assert (await check.verify(first)).subject == "alice"

    second = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "k2"})
    with pytest.raises(TokenError) as raised:
        await check.verify(second)
    assert raised.value.reason == ErrorReason.TOKEN_KEY_UNKNOWN

    # The identity provider rotates: the file gains k2 (and is read again).
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    _jwk(rsa_key.public_key(), "k1", "RS256"),
                    _jwk(ec_key.public_key(), "k2", "ES256"),
                ]
            }
        )
    )
    stat = jwks.stat()
    os.utime(jwks, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (await check.verify(second)).subject == "alice"


def test_scopes_come_from_scope_or_scp() -> None:
    assert scopes_of({"scope": "a b"}) == {"a", "b"}
    assert scopes_of({"scp": ["a", "c"]}) == {"a", "c"}
    assert scopes_of({}) == frozenset()


# --- who is calling ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "service"),
    [
        (["ordermesh-order"], "order"),
        (["localhost", "ordermesh-inventory.shop.svc.cluster.local"], "inventory"),
        (["om-ordermesh-payment.shop.svc"], "payment"),  # the chart's <release>-ordermesh-*
        (["caller", "ordermesh-caller", "localhost"], ""),
        (["ordermesh-order", "ordermesh-payment"], ""),  # ambiguous: no identity
        (["order"], ""),
        (["ordermesh-orders"], ""),
        (["evil.ordermesh-order.example.com"], ""),  # only the first label counts
        ([], ""),
    ],
)
def test_service_identity_from_certificate_names(names: list[str], service: str) -> None:
    assert service_identity(names) == service


async def test_authenticator_needs_a_token_or_a_service_certificate(
    keys: tuple[Path, Path],
) -> None:
    auth = Authenticator(verifier(keys[1]))
    with pytest.raises(Unauthenticated) as raised:
        await auth.authenticate(None, ["caller"])
    assert raised.value.reason == ErrorReason.CREDENTIALS_MISSING
    assert await auth.authenticate(None, ["ordermesh-order"]) == Principal(service="order")
    token = mint_token(keys[0], "alice")
    assert await auth.authenticate(f"Bearer {token}", ["caller"]) == Principal(subject="alice")
    for bad in ("Basic dXNlcjpwdw==", "Bearer ", token):
        with pytest.raises(Unauthenticated) as raised:
            await auth.authenticate(bad, [])
        assert raised.value.reason == ErrorReason.TOKEN_MALFORMED


async def test_a_bad_token_is_refused_even_with_a_service_certificate(
    keys: tuple[Path, Path],
) -> None:
    auth = Authenticator(verifier(keys[1]))
    expired = mint_token(keys[0], "alice", ttl_s=-120)
    with pytest.raises(Unauthenticated) as raised:
        await auth.authenticate(f"Bearer {expired}", ["ordermesh-order"])
    assert raised.value.reason == ErrorReason.TOKEN_EXPIRED
    assert expired not in str(raised.value)


async def test_without_keys_only_service_certificates_are_accepted(keys: tuple[Path, Path]) -> None:
    auth = Authenticator(None)
    with pytest.raises(Unauthenticated) as raised:
        await auth.authenticate(f"Bearer {mint_token(keys[0], 'alice')}", [])
    assert raised.value.reason == ErrorReason.TOKEN_NOT_ACCEPTED


def test_ownership_follows_the_principal_in_context() -> None:
    assert current_principal() is INTERNAL  # outside any request: the service itself
    require_owner("anyone")
    token = set_principal(ALICE)
    try:
        require_owner("alice")
        with pytest.raises(PermissionDenied) as raised:
            require_owner("bob", "order/o-1")
        assert raised.value.reason == ErrorReason.NOT_OWNER
        assert raised.value.metadata == {"resource": "order/o-1"}
    finally:
        reset_principal(token)
    token = set_principal(ADMIN)
    try:
        require_owner("bob")
    finally:
        reset_principal(token)


# --- the policy tables -----------------------------------------------------------------

POLICIES = [
    (ORDER_POLICY, order_pb2.DESCRIPTOR, "OrderService"),
    (INVENTORY_POLICY, inventory_pb2.DESCRIPTOR, "InventoryService"),
    (PAYMENT_POLICY, payment_pb2.DESCRIPTOR, "PaymentService"),
    (NOTIFICATION_POLICY, notification_pb2.DESCRIPTOR, "NotificationService"),
]


@pytest.mark.parametrize(("policy", "file", "name"), POLICIES)
def test_every_rpc_has_exactly_one_rule(
    policy: Policy, file: descriptor.FileDescriptor, name: str
) -> None:
    service = file.services_by_name[name]
    assert policy.service == service.full_name
    assert set(policy.rules) == {m.name for m in service.methods}


def _allowed(policy: Policy, method: str, who: Principal, request: Any) -> bool | str:
    try:
        policy.authorize(method, who, request)
    except PermissionDenied as error:
        return error.reason_name
    return True


def test_order_policy() -> None:
    place = order_pb2.PlaceOrderRequest(customer_id="alice")
    listing = order_pb2.ListOrdersRequest(customer_id="alice")
    for method, request in [("PlaceOrder", place), ("ListOrders", listing)]:
        assert _allowed(ORDER_POLICY, ORDER + method, ALICE, request) is True
        assert _allowed(ORDER_POLICY, ORDER + method, ADMIN, request) is True
        assert _allowed(ORDER_POLICY, ORDER + method, BOB, request) == "NOT_OWNER"
        assert _allowed(ORDER_POLICY, ORDER + method, ORDER_SVC, request) == "NOT_OWNER"
    # Reading an order: the use case checks its owner.
    get = order_pb2.GetOrderRequest(order_id="o-1")
    assert _allowed(ORDER_POLICY, ORDER + "GetOrder", BOB, get) is True


def test_inventory_policy() -> None:
    adjust = inventory_pb2.AdjustStockRequest(sku="TEA", delta=1, adjustment_id="a")
    assert _allowed(INVENTORY_POLICY, INVENTORY + "AdjustStock", ADMIN, adjust) is True
    assert _allowed(INVENTORY_POLICY, INVENTORY + "AdjustStock", ALICE, adjust) == "ADMIN_REQUIRED"
    assert _allowed(INVENTORY_POLICY, INVENTORY + "UpsertProduct", ORDER_SVC, adjust) == (
        "ADMIN_REQUIRED"
    )
    reserve = inventory_pb2.ReserveStockRequest(order_id="o-1")
    for method in ("ReserveStock", "CommitReservation", "ReleaseReservation"):
        assert _allowed(INVENTORY_POLICY, INVENTORY + method, ORDER_SVC, reserve) is True
        assert _allowed(INVENTORY_POLICY, INVENTORY + method, ADMIN, reserve) is True
        assert _allowed(INVENTORY_POLICY, INVENTORY + method, ALICE, reserve) == "SERVICE_ONLY"
        assert _allowed(INVENTORY_POLICY, INVENTORY + method, PAYMENT_SVC, reserve) == (
            "SERVICE_ONLY"
        )
    stock = inventory_pb2.GetStockRequest(skus=["TEA"])
    assert _allowed(INVENTORY_POLICY, INVENTORY + "GetStock", ALICE, stock) is True


def test_payment_policy() -> None:
    refund = payment_pb2.RefundPaymentRequest(order_id="o-1")
    for method in ("AuthorizePayment", "CapturePayment", "VoidPayment", "RefundPayment"):
        assert _allowed(PAYMENT_POLICY, PAYMENT + method, ORDER_SVC, refund) is True
        assert _allowed(PAYMENT_POLICY, PAYMENT + method, ADMIN, refund) is True
        assert _allowed(PAYMENT_POLICY, PAYMENT + method, ALICE, refund) == "SERVICE_ONLY"


def test_notification_policy_reads_nested_customer_ids() -> None:
    mine = notification_pb2.SetPreferencesRequest(
        preferences=notification_pb2.Preferences(customer_id="alice")
    )
    method = NOTIFICATION + "SetPreferences"
    assert _allowed(NOTIFICATION_POLICY, method, ALICE, mine) is True
    assert _allowed(NOTIFICATION_POLICY, method, BOB, mine) == "NOT_OWNER"
    listing = notification_pb2.ListNotificationsRequest(customer_id="alice")
    assert _allowed(NOTIFICATION_POLICY, NOTIFICATION + "ListNotifications", BOB, listing) == (
        "NOT_OWNER"
    )


def test_a_method_without_a_rule_is_refused() -> None:
    assert _allowed(ORDER_POLICY, ORDER + "DropAllOrders", ADMIN, None) == "NO_POLICY"


# --- errors on the wire -----------------------------------------------------------------


def _info(status: grpc.Status) -> error_details_pb2.ErrorInfo:
    details = status_pb2.Status.FromString(
        dict(status.trailing_metadata)["grpc-status-details-bin"]
    ).details
    info = error_details_pb2.ErrorInfo()
    assert details[0].Unpack(info)
    return info


def test_auth_errors_map_to_their_codes_with_error_info() -> None:
    status = to_grpc_status(Unauthenticated(ErrorReason.TOKEN_EXPIRED, "the token has expired"))
    assert status.code == grpc.StatusCode.UNAUTHENTICATED
    assert _info(status).reason == "TOKEN_EXPIRED"
    status = to_grpc_status(
        PermissionDenied(ErrorReason.NOT_OWNER, "not yours", {"resource": "order/1"})
    )
    assert status.code == grpc.StatusCode.PERMISSION_DENIED
    info = _info(status)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "NOT_OWNER",
        "ordermesh",
        {"resource": "order/1"},
    )
