"""mTLS, the plaintext health-only port, and caller authentication on a real service
(inventory, in the test's event loop, over real gRPC)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2 as pb
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh_cli.access import open_channel
from ordermesh_cli.health_client import check_health
from ordermesh_cli.registry import load_service
from ordermesh_platform.devcerts import ADMIN_SCOPE, create_dev_certs, ensure_jwt_keys, mint_token
from ordermesh_platform.server import RunningService
from ordermesh_platform.tls import TlsFiles
from tests.support.rich_status import detail
from tests.support.services import running_service

pytestmark = pytest.mark.integration

INVENTORY = "ordermesh.inventory.v1.InventoryService"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Secured:
    service: RunningService
    certs: Path
    other_certs: Path
    signing_key: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def tls(self, name: str) -> TlsFiles:
        return TlsFiles.in_dir(self.certs / name)

    def bearer(self, subject: str, *scopes: str, ttl_s: float = 300) -> tuple[tuple[str, str]]:
        token = mint_token(self.signing_key, subject, scopes, ttl_s=ttl_s)
        return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    tmp = tmp_path_factory.mktemp("tls")
    create_dev_certs(tmp / "certs")
    create_dev_certs(tmp / "other")  # a second CA: its certificates must be refused
    private, public = ensure_jwt_keys(tmp / "auth")
    files = TlsFiles.in_dir(tmp / "certs" / "inventory")
    async with running_service(
        load_service("inventory"),
        f"sqlite+aiosqlite:///{tmp}/inventory.db",
        tls_cert_file=str(files.cert),
        tls_key_file=str(files.key),
        tls_ca_file=str(files.ca),
        health_port=_free_port(),
        auth_enabled=True,
        auth_jwt_public_key_file=str(public),
        auth_jwt_issuer="ordermesh-dev",
    ) as service:
        yield Secured(service, tmp / "certs", tmp / "other", private)


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def _product(sku: str) -> pb.UpsertProductRequest:
    return pb.UpsertProductRequest(
        product=pb.Product(
            sku=sku, name=sku, unit_price=money_pb2.Money(amount_minor=100, currency="EUR")
        )
    )


async def test_health_answers_over_mtls_and_on_the_plaintext_health_port(
    secured: Secured,
) -> None:
    assert await check_health(secured.address, INVENTORY, 5, secured.tls("caller")) == "SERVING"
    health_port = f"127.0.0.1:{secured.service.health_port}"
    assert await check_health(health_port, INVENTORY, 5) == "SERVING"
    assert await check_health(health_port, "ordermesh.liveness", 5) == "SERVING"
    # The health port serves health only: nothing else answers there.
    async with grpc.aio.insecure_channel(health_port) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        error = await _error(stub.GetStock(pb.GetStockRequest(skus=["X"]), timeout=5))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_plaintext_and_foreign_or_missing_client_certificates_are_refused(
    secured: Secured,
) -> None:
    assert await check_health(secured.address, "", 3) == "DOWN"
    foreign = TlsFiles.in_dir(secured.other_certs / "caller")
    assert await check_health(secured.address, "", 3, foreign) == "DOWN"
    # A client that trusts the server but shows no certificate of its own.
    creds = grpc.ssl_channel_credentials(secured.tls("caller").ca.read_bytes())
    async with grpc.aio.secure_channel(secured.address, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        error = await _error(stub.Check(health_pb2.HealthCheckRequest(), timeout=3))  # type: ignore[attr-defined]
        assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_callers_must_authenticate_and_are_authorized_by_the_policy(
    secured: Secured,
) -> None:
    async with open_channel(secured.address, secured.tls("caller")) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        # No token, and a certificate that names no service.
        error = await _error(stub.GetStock(pb.GetStockRequest(skus=["A"]), timeout=5))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert detail(error, error_details_pb2.ErrorInfo).reason == "CREDENTIALS_MISSING"

        expired = secured.bearer("alice", ttl_s=-300)
        error = await _error(
            stub.GetStock(pb.GetStockRequest(skus=["A"]), timeout=5, metadata=expired)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert detail(error, error_details_pb2.ErrorInfo).reason == "TOKEN_EXPIRED"

        customer = secured.bearer("alice")
        error = await _error(stub.UpsertProduct(_product("TLS-A"), timeout=5, metadata=customer))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        info = detail(error, error_details_pb2.ErrorInfo)
        assert (info.reason, info.domain) == ("ADMIN_REQUIRED", "ordermesh")

        reserve = pb.ReserveStockRequest(
            order_id="o-tls-1", lines=[pb.ReservationLine(sku="TLS-A", quantity=1)], currency="EUR"
        )
        error = await _error(stub.ReserveStock(reserve, timeout=5, metadata=customer))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert detail(error, error_details_pb2.ErrorInfo).reason == "SERVICE_ONLY"

        admin = secured.bearer("ops", ADMIN_SCOPE)
        await stub.UpsertProduct(_product("TLS-A"), timeout=5, metadata=admin)
        await stub.AdjustStock(
            pb.AdjustStockRequest(adjustment_id="tls-a", sku="TLS-A", delta=3),
            timeout=5,
            metadata=admin,
        )
        reply = await stub.GetStock(
            pb.GetStockRequest(skus=["TLS-A"]), timeout=5, metadata=customer
        )
        assert reply.stock[0].available == 3

    # order-service's certificate is its identity: it may reserve, without a token.
    async with open_channel(secured.address, secured.tls("order")) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        reserved = await stub.ReserveStock(reserve, timeout=5)
        assert reserved.reservation.order_id == "o-tls-1"
        error = await _error(stub.AdjustStock(
            pb.AdjustStockRequest(adjustment_id="tls-b", sku="TLS-A", delta=1), timeout=5
        ))  # fmt: skip
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    # payment-service's certificate is not order-service's.
    async with open_channel(secured.address, secured.tls("payment")) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        release = pb.ReleaseReservationRequest(order_id="o-tls-1")
        error = await _error(stub.ReleaseReservation(release, timeout=5))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert detail(error, error_details_pb2.ErrorInfo).reason == "SERVICE_ONLY"
