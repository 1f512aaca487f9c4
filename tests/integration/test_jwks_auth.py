"""Token keys from an identity provider over HTTP, on a real service (inventory, in the
test's event loop, over real gRPC): OIDC discovery, a key rotated without a restart,
and a provider that is unreachable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.inventory.v1 import inventory_pb2 as pb
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh_cli.registry import load_service
from ordermesh_platform.devcerts import DEV_AUDIENCE
from tests.support.identity_provider import (
    DISCOVERY_PATH,
    JWKS_PATH,
    IdentityProvider,
    SigningKey,
    serving,
)
from tests.support.ports import free_port_block
from tests.support.rich_status import detail
from tests.support.services import running_service

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(tmp_path: Path) -> tuple[SigningKey, SigningKey]:
    return SigningKey.make(tmp_path, "k1"), SigningKey.make(tmp_path, "k2")


@pytest.fixture
def idp(keys: tuple[SigningKey, SigningKey]) -> Iterator[IdentityProvider]:
    """A provider on 127.0.0.1 publishing k1, stopped at the end of the test."""
    with serving(IdentityProvider(keys=[keys[0]])) as provider:
        yield provider


@asynccontextmanager
async def inventory(
    tmp_path: Path, **auth: object
) -> AsyncIterator[inventory_pb2_grpc.InventoryServiceAsyncStub]:
    """Inventory with authentication on and the given key settings; a refresh may
    follow every unknown kid (interval 0), so that each call below is decided by what
    the provider publishes at that moment."""
    async with (
        running_service(
            load_service("inventory"),
            f"sqlite+aiosqlite:///{tmp_path}/inventory.db",
            auth_enabled=True,
            auth_jwt_audience=DEV_AUDIENCE,
            auth_jwks_min_refresh_interval_s=0,
            **auth,
        ) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        yield inventory_pb2_grpc.InventoryServiceStub(channel)


async def _list(
    stub: inventory_pb2_grpc.InventoryServiceAsyncStub, token: str
) -> pb.ListProductsResponse:
    metadata = (("authorization", f"Bearer {token}"),)
    response: pb.ListProductsResponse = await stub.ListProducts(
        pb.ListProductsRequest(), timeout=10, metadata=metadata
    )
    return response


async def _refusal(
    stub: inventory_pb2_grpc.InventoryServiceAsyncStub, token: str
) -> tuple[str, str]:
    """The status code and ErrorInfo reason of a refused call."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list(stub, token)
    error = raised.value
    return error.code().name, detail(error, error_details_pb2.ErrorInfo).reason


async def test_a_rotated_key_is_picked_up_through_oidc_discovery_without_a_restart(
    tmp_path: Path, idp: IdentityProvider, keys: tuple[SigningKey, SigningKey]
) -> None:
    k1, k2 = keys
    async with inventory(tmp_path, auth_oidc_issuer=idp.issuer) as stub:
        await _list(stub, k1.token("alice", idp.issuer))
        # Not the issuer discovered: refused, although the key is the provider's.
        assert await _refusal(stub, k1.token("alice", "https://evil.example")) == (
            "UNAUTHENTICATED",
            "TOKEN_NOT_FOR_US",
        )

        idp.keys = [k2]  # the provider rotates: k1 is withdrawn, k2 signs from now on
        await _list(stub, k2.token("alice", idp.issuer))
        assert await _refusal(stub, k1.token("alice", idp.issuer)) == (
            "UNAUTHENTICATED",
            "TOKEN_KEY_UNKNOWN",
        )
        await _list(stub, k2.token("alice", idp.issuer))
    assert idp.requests[DISCOVERY_PATH] == 1
    # The first use, then one refetch for each unknown kid: k2 (found), k1 (withdrawn).
    assert idp.requests[JWKS_PATH] == 3


async def test_an_unreachable_provider_refuses_tokens_until_it_is_back_then_its_keys_stay(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    k1, k2 = keys
    port = free_port_block(1)
    jwks_url = f"http://127.0.0.1:{port}{JWKS_PATH}"
    async with inventory(tmp_path, auth_jwks_url=jwks_url, auth_jwks_timeout_s=2) as stub:
        # Nothing listens yet: no keys at all.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _list(stub, k1.token("alice", "idp"))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert detail(raised.value, error_details_pb2.ErrorInfo).reason == (
            "TOKEN_KEYS_UNAVAILABLE"
        )
        assert "could not be fetched" in (raised.value.details() or "")

        with serving(IdentityProvider(keys=[k1]), port=port):
            await _list(stub, k1.token("alice", "idp"))

        # The provider is gone again: the keys fetched keep working, a new kid is refused.
        await _list(stub, k1.token("alice", "idp"))
        assert await _refusal(stub, k2.token("alice", "idp")) == (
            "UNAUTHENTICATED",
            "TOKEN_KEY_UNKNOWN",
        )
