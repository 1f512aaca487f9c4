"""A local identity provider: signing keys, and an HTTP server on 127.0.0.1 (in a thread)
publishing their JWKS and an OIDC discovery document, as an IdP does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from ordermesh_platform.devcerts import DEV_AUDIENCE, ensure_jwt_keys, mint_token

JWKS_PATH = "/keys"
DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class SigningKey:
    """A development ES256 key pair, published under ``kid``."""

    kid: str
    private: Path
    public: Path

    @classmethod
    def make(cls, directory: Path, kid: str) -> SigningKey:
        private, public = ensure_jwt_keys(directory / kid)
        return cls(kid, private, public)

    def jwk(self) -> dict[str, Any]:
        public_key = serialization.load_pem_public_key(self.public.read_bytes())
        data: dict[str, Any] = json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(public_key))
        return {**data, "kid": self.kid, "alg": "ES256", "use": "sig"}

    def token(self, subject: str, issuer: str, **kw: Any) -> str:
        return mint_token(
            self.private, subject, audience=DEV_AUDIENCE, issuer=issuer, kid=self.kid, **kw
        )


@dataclass
class IdentityProvider:
    """What the server publishes (``keys``), and how often each path was asked for."""

    keys: list[SigningKey] = field(default_factory=list)
    issuer: str = ""
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def jwks_url(self) -> str:
        return self.issuer + JWKS_PATH

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": self.jwks_url}


def _handler(idp: IdentityProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.requests[self.path] = idp.requests.get(self.path, 0) + 1
            documents = {JWKS_PATH: idp.jwks, DISCOVERY_PATH: idp.discovery}
            if self.path not in documents:
                self.send_error(404)
                return
            body = json.dumps(documents[self.path]()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test's output stays about the test

    return Handler


@contextmanager
def serving(idp: IdentityProvider, port: int = 0) -> Iterator[IdentityProvider]:
    """Serve ``idp`` on 127.0.0.1 (``port``, or a free one) until the block ends; its
    ``issuer`` becomes the server's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(idp))
    idp.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="identity-provider")
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
