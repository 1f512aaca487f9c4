"""How the CLI (and the tests) reach a mesh: plaintext or mTLS with a certificate, and,
when the mesh authenticates callers, the bearer tokens to send (minted with the local
mesh's development signing key)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ordermesh_platform.devcerts import ADMIN_SCOPE, mint_token
from ordermesh_platform.targets import grpc_target, target_authority
from ordermesh_platform.tls import TlsFiles, channel_credentials

Metadata = tuple[tuple[str, str], ...]
TOKEN_TTL_S = 3600.0


def open_channel(address: str, tls: TlsFiles | None = None) -> grpc.aio.Channel:
    """A plain channel (no retries, no tracing): what a tool or a test talks through.
    ``address`` may list several replicas (ordermesh_platform.targets): calls go
    round-robin over them."""
    target = grpc_target(address)
    options: list[tuple[str, str]] = [
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))
    ]
    if (authority := target_authority(target)) is not None:
        options.append(("grpc.default_authority", authority))
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)


@dataclass
class Access:
    """``tls``: the client certificate to present (None: plaintext). ``signing_key``:
    the development JWT key to mint tokens with (None: send no token)."""

    tls: TlsFiles | None = None
    signing_key: Path | None = None
    _tokens: dict[tuple[str, bool], tuple[float, str]] = field(default_factory=dict, repr=False)

    def channel(self, address: str) -> grpc.aio.Channel:
        return open_channel(address, self.tls)

    def _token(self, subject: str, admin: bool) -> str:
        assert self.signing_key is not None
        now = time.monotonic()
        cached = self._tokens.get((subject, admin))
        if cached is None or now - cached[0] > TOKEN_TTL_S / 2:
            scopes = [ADMIN_SCOPE] if admin else []
            cached = (now, mint_token(self.signing_key, subject, scopes, ttl_s=TOKEN_TTL_S))
            self._tokens[(subject, admin)] = cached
        return cached[1]

    def as_customer(self, customer_id: str) -> Metadata:
        """Call metadata of a customer (their token); empty when no tokens are sent."""
        if self.signing_key is None:
            return ()
        return (("authorization", f"Bearer {self._token(customer_id, False)}"),)

    def as_admin(self, subject: str = "ordermesh-operator") -> Metadata:
        if self.signing_key is None:
            return ()
        return (("authorization", f"Bearer {self._token(subject, True)}"),)
