"""Who is calling: the ``Principal``, how it is established (a bearer JWT, or the client
certificate of an ordermesh service), and the contextvar a request carries it in.

No gRPC here: the interceptor (``interceptors.AuthInterceptor``) hands this module the
token and the peer certificate's names, and use cases read ``current_principal()``
without knowing about transports.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from ordermesh_platform.errors import PermissionDenied, Unauthenticated

ADMIN_SCOPE = "ordermesh:admin"
SERVICE_NAMES = ("order", "inventory", "payment", "notification")
# A certificate name whose first DNS label is ordermesh-<service>, optionally after a
# release prefix (<release>-ordermesh-<service>, the chart's Service names).
_SERVICE_NAME = re.compile(r"^(?:[a-z0-9-]+-)?ordermesh-(" + "|".join(SERVICE_NAMES) + r")$")


@dataclass(frozen=True)
class Principal:
    """The caller of the current request.

    ``subject`` is the token's ``sub`` (a customer id, or an operator), ``scopes`` its
    scopes, ``service`` the ordermesh service named by the client certificate. The
    ``internal`` principal stands for the service itself: background work, and every
    call while authentication is off.
    """

    subject: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    service: str = ""
    internal: bool = False

    @property
    def is_admin(self) -> bool:
        return self.internal or ADMIN_SCOPE in self.scopes

    def is_service(self, *names: str) -> bool:
        return self.internal or (bool(self.service) and self.service in names)

    def owns(self, customer_id: str) -> bool:
        """May act for this customer: the customer themselves, or an administrator."""
        return self.is_admin or (bool(self.subject) and self.subject == customer_id)

    def describe(self) -> dict[str, str]:
        """For logs: who, never how (no token)."""
        return {
            "subject": self.subject,
            "service": self.service,
            "scopes": " ".join(sorted(self.scopes)),
        }


INTERNAL = Principal(internal=True)
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "ordermesh_principal", default=INTERNAL
)


def current_principal() -> Principal:
    """The caller of the request being handled; ``INTERNAL`` outside any request or
    while authentication is off."""
    return _current.get()


def set_principal(principal: Principal) -> contextvars.Token[Principal]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal]) -> None:
    _current.reset(token)


def require_owner(customer_id: str, resource: str = "") -> None:
    """PERMISSION_DENIED unless the current caller may act for ``customer_id``."""
    principal = current_principal()
    if not principal.owns(customer_id):
        metadata = {"resource": resource} if resource else {}
        raise PermissionDenied(
            "NOT_OWNER", "the caller may act only for its own customer id", metadata
        )


def service_identity(names: Iterable[str]) -> str:
    """The ordermesh service a certificate's names (CN and DNS SANs) identify; "" when
    none, or when they name more than one."""
    found = set()
    for name in names:
        match = _SERVICE_NAME.match(name.split(".", 1)[0].lower())
        if match:
            found.add(match.group(1))
    return found.pop() if len(found) == 1 else ""


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """OAuth 2 ``scope`` (space-separated) or ``scp`` (a list or a string)."""
    scopes: set[str] = set()
    for key in ("scope", "scp"):
        value = claims.get(key)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(str(v) for v in value)
    return frozenset(scopes)


class TokenError(Exception):
    """Why a token was refused: ``reason`` is a fixed code, safe to return and log."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenSettings:
    public_key_file: str = ""
    jwks_file: str = ""
    audience: str = ""
    issuer: str = ""
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    leeway_s: float = 30.0


class TokenVerifier:
    """Verifies bearer JWTs with a PEM public key or a JWKS file (chosen by ``kid``).
    The file is read again when it changes (checked at most every few seconds), so keys
    can rotate without a restart."""

    RECHECK_S = 5.0

    def __init__(self, settings: TokenSettings) -> None:
        if not (settings.public_key_file or settings.jwks_file):
            raise ValueError("a public key file or a JWKS file is needed to verify tokens")
        self._settings = settings
        self._path = Path(settings.jwks_file or settings.public_key_file)
        self._lock = threading.Lock()
        self._checked = 0.0
        self._mtime = -1
        self._pem: bytes = b""
        self._jwks: jwt.PyJWKSet | None = None
        self._load()

    def _load(self) -> None:
        mtime = os.stat(self._path).st_mtime_ns
        if mtime == self._mtime:
            return
        data = self._path.read_bytes()
        if self._settings.jwks_file:
            self._jwks = jwt.PyJWKSet.from_json(data.decode())
        else:
            self._pem = data
        self._mtime = mtime

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.RECHECK_S:
            return
        with self._lock:
            self._checked = now
            # Keep the keys we have when the file is unreadable (half-written): next time.
            with contextlib.suppress(OSError, ValueError, jwt.PyJWTError):
                self._load()

    def _key(self, token: str) -> Any:
        if self._jwks is None:
            return self._pem
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as error:
            raise TokenError("TOKEN_MALFORMED", "the token is not a JWT") from error
        keys = self._jwks.keys
        if kid is None and len(keys) == 1:
            return keys[0].key
        for candidate in keys:
            if candidate.key_id == kid:
                return candidate.key
        raise TokenError("TOKEN_KEY_UNKNOWN", "the token's signing key is not trusted")

    def verify(self, token: str) -> Principal:
        self._refresh()
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                key=self._key(token),
                algorithms=list(s.algorithms),
                audience=s.audience or None,
                issuer=s.issuer or None,
                leeway=s.leeway_s,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": bool(s.audience),
                    "verify_iss": bool(s.issuer),
                },
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenError("TOKEN_EXPIRED", "the token has expired") from error
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as error:
            raise TokenError("TOKEN_NOT_FOR_US", "the token is for another audience") from error
        except jwt.PyJWTError as error:
            raise TokenError("TOKEN_INVALID", "the token is not valid") from error
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenError("TOKEN_INVALID", "the token names no subject")
        return Principal(subject=subject, scopes=scopes_of(claims))


class Authenticator:
    """Turns what a call carries into a ``Principal``, or refuses it (UNAUTHENTICATED).

    A bearer token, when present, must be valid: a bad token is never ignored in favour
    of the certificate. The certificate of an ordermesh service adds its identity.
    """

    def __init__(self, verifier: TokenVerifier | None) -> None:
        self._verifier = verifier

    def authenticate(self, authorization: str | None, peer_names: Iterable[str]) -> Principal:
        service = service_identity(peer_names)
        if authorization is None:
            if service:
                return Principal(service=service)
            raise Unauthenticated(
                "CREDENTIALS_MISSING",
                "send a bearer token (authorization: Bearer <jwt>) or call with the "
                "certificate of an ordermesh service",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("TOKEN_MALFORMED", "authorization must be 'Bearer <jwt>'")
        if self._verifier is None:
            raise Unauthenticated("TOKEN_NOT_ACCEPTED", "this service accepts no tokens")
        try:
            principal = self._verifier.verify(token)
        except TokenError as error:
            raise Unauthenticated(error.reason, str(error)) from error
        return Principal(principal.subject, principal.scopes, service)
