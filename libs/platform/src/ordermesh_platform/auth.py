"""Who is calling: the ``Principal``, how it is established (a bearer JWT, or the client
certificate of an ordermesh service), and the contextvar a request carries it in.

No gRPC here: the interceptor (``interceptors.AuthInterceptor``) hands this module the
token and the peer certificate's names, and use cases read ``current_principal()``
without knowing about transports.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_platform.errors import PermissionDenied, Unauthenticated
from ordermesh_platform.service_names import SERVICE_NAMES
from ordermesh_platform.signing_keys import (
    JwksUrl,
    KeyFile,
    KeysUnavailable,
    OidcDiscovery,
    RemoteKeys,
    SigningKeys,
    UnknownKey,
    http_url,
)

ADMIN_SCOPE = "ordermesh:admin"
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
            ErrorReason.NOT_OWNER, "the caller may act only for its own customer id", metadata
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

    def __init__(self, reason: ErrorReason.ValueType, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenSettings:
    """How tokens are checked. The keys come from at most one source: a PEM public key
    file, a JWKS file, a JWKS URL, or an OIDC issuer's discovery document."""

    public_key_file: str = ""
    jwks_file: str = ""
    jwks_url: str = ""
    oidc_issuer: str = ""
    audience: str = ""
    issuer: str = ""
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    leeway_s: float = 30.0
    jwks_cache_s: float = 300.0
    jwks_min_refresh_interval_s: float = 10.0
    jwks_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        sources = self.key_sources()
        if len(sources) > 1:
            raise ValueError(
                f"set one source of token keys, not {len(sources)}: {', '.join(sources)}"
            )
        if self.jwks_url:
            http_url(self.jwks_url, "ORDERMESH_AUTH_JWKS_URL")
        if self.oidc_issuer:
            http_url(self.oidc_issuer, "ORDERMESH_AUTH_OIDC_ISSUER")

    def key_sources(self) -> list[str]:
        """The settings naming a source of keys that are set."""
        named = {
            "ORDERMESH_AUTH_JWT_PUBLIC_KEY_FILE": self.public_key_file,
            "ORDERMESH_AUTH_JWKS_FILE": self.jwks_file,
            "ORDERMESH_AUTH_JWKS_URL": self.jwks_url,
            "ORDERMESH_AUTH_OIDC_ISSUER": self.oidc_issuer,
        }
        return [name for name, value in named.items() if value]

    @property
    def required_issuer(self) -> str:
        """The ``iss`` tokens must carry: the one set, else the OIDC issuer; "" for none."""
        return self.issuer or self.oidc_issuer


def signing_keys(settings: TokenSettings) -> SigningKeys:
    """The key source the settings name."""
    s = settings
    remote: JwksUrl | OidcDiscovery | None = None
    if s.oidc_issuer:
        remote = OidcDiscovery(s.oidc_issuer, s.jwks_timeout_s)
    elif s.jwks_url:
        remote = JwksUrl(s.jwks_url, s.jwks_timeout_s)
    if remote is not None:
        return RemoteKeys(
            remote,
            source=remote.url,
            cache_s=s.jwks_cache_s,
            min_refresh_interval_s=s.jwks_min_refresh_interval_s,
            timeout_s=s.jwks_timeout_s,
        )
    if s.jwks_file:
        return KeyFile(Path(s.jwks_file), jwks=True)
    if s.public_key_file:
        return KeyFile(Path(s.public_key_file), jwks=False)
    raise ValueError("a key file, a JWKS URL or an OIDC issuer is needed to verify tokens")


class TokenVerifier:
    """Verifies bearer JWTs: the key named by the header's ``kid`` (from ``keys``; by
    default the source the settings name), then signature, algorithm, ``exp``/``nbf``,
    and ``aud`` and ``iss`` when configured."""

    def __init__(self, settings: TokenSettings, keys: SigningKeys | None = None) -> None:
        self._settings = settings
        self._keys = keys if keys is not None else signing_keys(settings)

    async def _key(self, token: str) -> Any:
        # The header is read, and its algorithm checked, before any key is looked up:
        # a token that cannot pass never makes the service fetch keys.
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenError(ErrorReason.TOKEN_INVALID, "the token is not a JWT") from error
        kid = header.get("kid")
        if header.get("alg") not in self._settings.algorithms or not (
            kid is None or isinstance(kid, str)
        ):
            raise TokenError(
                ErrorReason.TOKEN_INVALID, "the token's algorithm or key id is not accepted"
            )
        try:
            return await self._keys.key_for(kid)
        except UnknownKey as error:
            raise TokenError(
                ErrorReason.TOKEN_KEY_UNKNOWN, "the token's signing key is not trusted"
            ) from error
        except KeysUnavailable as error:
            raise TokenError(
                ErrorReason.TOKEN_KEYS_UNAVAILABLE,
                "the identity provider's signing keys could not be fetched; retry later",
            ) from error

    async def verify(self, token: str) -> Principal:
        s = self._settings
        key = await self._key(token)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(s.algorithms),
                audience=s.audience or None,
                issuer=s.required_issuer or None,
                leeway=s.leeway_s,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": bool(s.audience),
                    "verify_iss": bool(s.required_issuer),
                },
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenError(ErrorReason.TOKEN_EXPIRED, "the token has expired") from error
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as error:
            raise TokenError(
                ErrorReason.TOKEN_NOT_FOR_US, "the token is for another audience or issuer"
            ) from error
        except jwt.PyJWTError as error:
            raise TokenError(ErrorReason.TOKEN_INVALID, "the token is not valid") from error
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenError(ErrorReason.TOKEN_INVALID, "the token names no subject")
        return Principal(subject=subject, scopes=scopes_of(claims))


class Authenticator:
    """Turns what a call carries into a ``Principal``, or refuses it (UNAUTHENTICATED).

    A bearer token, when present, must be valid: a bad token is never ignored in favour
    of the certificate. The certificate of an ordermesh service adds its identity.
    """

    def __init__(self, verifier: TokenVerifier | None) -> None:
        self._verifier = verifier

    async def authenticate(self, authorization: str | None, peer_names: Iterable[str]) -> Principal:
        service = service_identity(peer_names)
        if authorization is None:
            if service:
                return Principal(service=service)
            raise Unauthenticated(
                ErrorReason.CREDENTIALS_MISSING,
                "send a bearer token (authorization: Bearer <jwt>) or call with the "
                "certificate of an ordermesh service",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                ErrorReason.TOKEN_MALFORMED, "authorization must be 'Bearer <jwt>'"
            )
        if self._verifier is None:
            raise Unauthenticated(ErrorReason.TOKEN_NOT_ACCEPTED, "this service accepts no tokens")
        try:
            principal = await self._verifier.verify(token)
        except TokenError as error:
            raise Unauthenticated(error.reason, str(error)) from error
        return Principal(principal.subject, principal.scopes, service)
