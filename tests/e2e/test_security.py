"""The mesh as processes with mTLS on every hop and caller authentication on (what
`ordermesh up --tls --auth` runs): who gets in, and who may do what."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.common.v1 import money_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from ordermesh.notification.v1 import notification_pb2, notification_pb2_grpc
from ordermesh.order.v1 import order_pb2 as pb
from ordermesh.order.v1 import order_pb2_grpc
from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc
from ordermesh_cli.access import Metadata, open_channel
from ordermesh_cli.health_client import check_health
from ordermesh_cli.registry import load_service
from ordermesh_platform.devcerts import create_dev_certs, ensure_jwt_keys, mint_token
from ordermesh_platform.service_names import SERVICE_NAMES
from ordermesh_platform.tls import TlsFiles
from tests.e2e.conftest import start_mesh
from tests.support.mesh_client import MeshClient
from tests.support.postgres import SERVER_URL, drop_databases_like, unique_name
from tests.support.rich_status import detail

if TYPE_CHECKING:  # the async stub types exist only in the .pyi
    from ordermesh.order.v1.order_pb2_grpc import OrderServiceAsyncStub

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshClient]:
    prefix = unique_name("omsec")
    tmp = tmp_path_factory.mktemp("mesh")
    async for client in start_mesh(tmp, f"{SERVER_URL}/{prefix}", tls=True, auth=True):
        yield client
    await drop_databases_like(prefix)


@pytest.fixture
async def mesh(secured: MeshClient) -> AsyncIterator[MeshClient]:
    """After every test the mesh settles and the design's invariants hold."""
    yield secured
    await secured.settle()
    assert (await secured.invariants()).violations == []


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates of another CA, with the very same names."""
    out = tmp_path_factory.mktemp("foreign")
    create_dev_certs(out)
    return out


def _as(mesh: MeshClient, customer: str) -> Metadata:
    return mesh.access.as_customer(customer)


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info.domain == "ordermesh"
    return str(info.reason)


async def test_only_clients_with_a_certificate_of_the_mesh_ca_get_in(
    mesh: MeshClient, foreign: Path
) -> None:
    config = mesh.mesh.config
    for name in SERVICE_NAMES:
        address = config.address(name)
        full_name = load_service(name).grpc_services[0]
        assert await check_health(address, full_name, 5, config.caller_tls) == "SERVING"
        assert await check_health(address, full_name, 3) == "DOWN"  # plaintext
        other_ca = TlsFiles.in_dir(foreign / "caller")
        assert await check_health(address, full_name, 3, other_ca) == "DOWN"
        # Not even another CA's certificate of the very service.
        impostor = TlsFiles.in_dir(foreign / name)
        assert await check_health(address, full_name, 3, impostor) == "DOWN"

    async with grpc.aio.insecure_channel(config.address("order")) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        error = await _error(stub.GetOrder(pb.GetOrderRequest(order_id="x"), timeout=3))
        assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_call_without_a_valid_token_is_unauthenticated(mesh: MeshClient) -> None:
    request = pb.ListOrdersRequest(customer_id="alice")
    error = await _error(mesh.orders.ListOrders(request, timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _reason(error) == "CREDENTIALS_MISSING"

    other_key = ensure_jwt_keys(mesh.mesh.config.state_dir / "other-idp")[0]
    forged = (("authorization", f"Bearer {mint_token(other_key, 'alice')}"),)
    error = await _error(mesh.orders.ListOrders(request, timeout=5, metadata=forged))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _reason(error) == "TOKEN_INVALID"

    # Health stays open to anyone with a certificate of the mesh, token or not.
    config = mesh.mesh.config
    assert await check_health(config.address("order"), "", 5, config.caller_tls) == "SERVING"


async def test_customers_see_and_change_only_their_own_orders(mesh: MeshClient) -> None:
    sku = await mesh.add_product(500, stock=5)
    # Over mTLS end to end: order-service reserves and authorizes with its certificate.
    order = await mesh.place({sku: 1}, customer="alice")
    assert order.state == pb.ORDER_STATE_CONFIRMED
    alice, bob = _as(mesh, "alice"), _as(mesh, "bob")
    orders: OrderServiceAsyncStub = mesh.orders
    get = pb.GetOrderRequest(order_id=order.order_id)

    assert (await orders.GetOrder(get, timeout=5, metadata=alice)).order.order_id == get.order_id
    error = await _error(orders.GetOrder(get, timeout=5, metadata=bob))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(error) == "NOT_OWNER"

    watch = orders.WatchOrder(
        pb.WatchOrderRequest(order_id=order.order_id), timeout=5, metadata=bob
    )
    error = await _error(watch.read())
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    cancel = pb.CancelOrderRequest(order_id=order.order_id, note="not mine")
    error = await _error(orders.CancelOrder(cancel, timeout=5, metadata=bob))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    for listing in (pb.ListOrdersRequest(customer_id="alice"), pb.ListOrdersRequest()):
        error = await _error(orders.ListOrders(listing, timeout=5, metadata=bob))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    mine = await orders.ListOrders(pb.ListOrdersRequest(customer_id="bob"), timeout=5, metadata=bob)
    assert list(mine.orders) == []

    on_behalf = mesh.place_request({sku: 1}, customer="alice")
    error = await _error(orders.PlaceOrder(on_behalf, timeout=5, metadata=bob))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(error) == "NOT_OWNER"

    # The owner cancels: order-service voids or refunds, and releases, as itself.
    cancelled = await orders.CancelOrder(cancel, timeout=10, metadata=alice)
    assert cancelled.order.state == pb.ORDER_STATE_CANCELLED
    # An administrator reads anyone's order.
    assert (await orders.GetOrder(get, timeout=5, metadata=mesh.admin)).order.customer_id == "alice"


async def test_admin_and_service_only_calls_refuse_a_customer_token(mesh: MeshClient) -> None:
    sku = await mesh.add_product(300, stock=2)
    alice = _as(mesh, "alice")
    adjust = inventory_pb2.AdjustStockRequest(adjustment_id="steal", sku=sku, delta=1000)
    error = await _error(mesh.inventory.AdjustStock(adjust, timeout=5, metadata=alice))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(error) == "ADMIN_REQUIRED"

    upsert = inventory_pb2.UpsertProductRequest(
        product=inventory_pb2.Product(
            sku=sku, name="free", unit_price=money_pb2.Money(amount_minor=1, currency="EUR")
        )
    )
    error = await _error(mesh.inventory.UpsertProduct(upsert, timeout=5, metadata=alice))
    assert _reason(error) == "ADMIN_REQUIRED"

    reserve = inventory_pb2.ReserveStockRequest(
        order_id="forged", lines=[inventory_pb2.ReservationLine(sku=sku, quantity=2)]
    )
    error = await _error(mesh.inventory.ReserveStock(reserve, timeout=5, metadata=alice))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(error) == "SERVICE_ONLY"

    order = await mesh.place({sku: 1}, customer="alice")
    payments: payment_pb2_grpc.PaymentServiceAsyncStub = mesh.payments
    refund = payment_pb2.RefundPaymentRequest(order_id=order.order_id)
    error = await _error(payments.RefundPayment(refund, timeout=5, metadata=alice))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    void = payment_pb2.VoidPaymentRequest(order_id=order.order_id)
    error = await _error(payments.VoidPayment(void, timeout=5, metadata=alice))
    assert _reason(error) == "SERVICE_ONLY"
    assert await mesh.stock(sku) in {(1, 1, 0), (1, 0, 1)}  # nothing moved by alice


async def test_notifications_and_preferences_only_for_their_customer(mesh: MeshClient) -> None:
    config = mesh.mesh.config
    alice, bob = _as(mesh, "alice"), _as(mesh, "bob")
    async with open_channel(config.address("notification"), config.caller_tls) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        listing = notification_pb2.ListNotificationsRequest(customer_id="alice")
        await stub.ListNotifications(listing, timeout=5, metadata=alice)
        error = await _error(stub.ListNotifications(listing, timeout=5, metadata=bob))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        prefs = notification_pb2.SetPreferencesRequest(
            preferences=notification_pb2.Preferences(
                customer_id="alice",
                channels=[notification_pb2.CHANNEL_WEBHOOK],
                webhook_url="https://attacker.example/hook",
            )
        )
        error = await _error(stub.SetPreferences(prefs, timeout=5, metadata=bob))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        get = notification_pb2.GetPreferencesRequest(customer_id="alice")
        reply = await stub.GetPreferences(get, timeout=5, metadata=alice)
        assert reply.preferences.webhook_url == ""


async def test_refusals_are_logged_without_the_token(mesh: MeshClient) -> None:
    bob = _as(mesh, "bob")
    token = bob[0][1].removeprefix("Bearer ")
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub = mesh.inventory
    adjust = inventory_pb2.AdjustStockRequest(adjustment_id="log-check", sku="X", delta=1)
    await _error(inventory.AdjustStock(adjust, timeout=5, metadata=bob))
    await _error(inventory.AdjustStock(adjust, timeout=5))
    logs = mesh.mesh.logs_dir
    inventory_log = (logs / "inventory.log").read_text()
    assert '"call refused"' in inventory_log
    assert '"ADMIN_REQUIRED"' in inventory_log
    assert '"unauthenticated call"' in inventory_log
    assert '"subject": "bob"' in inventory_log
    for log in logs.glob("*.log"):
        assert token not in log.read_text(), log.name
        assert token.split(".")[2] not in log.read_text(), log.name  # not even the signature


def test_the_health_command_works_over_mtls(mesh: MeshClient) -> None:
    config = mesh.mesh.config
    files = config.service_tls("order")
    assert files is not None
    base = [str(BIN / "ordermesh"), "health", config.address("inventory")]
    tls = ["--tls", "--cert", str(files.cert), "--key", str(files.key), "--ca", str(files.ca)]
    ok = subprocess.run([*base, *tls], capture_output=True, text=True, timeout=60, check=False)
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
    plain = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert (plain.returncode, plain.stdout.strip()) == (1, "DOWN")
