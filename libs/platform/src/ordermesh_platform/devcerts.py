"""Development key material, made with the ``cryptography`` package: a CA with a
certificate per service (server and client use) and one for callers, and a JWT signing
key pair with a way to mint tokens. `ordermesh certs` and `ordermesh up --tls/--auth`
use it, and so do the tests. Production certificates come from cert-manager or a PKI,
and tokens from an identity provider (docs/security.md).

Each certificate goes into a folder of its own with cert-manager's file names, so a
folder is exactly the Secret a pod mounts::

    <out>/ca.crt  <out>/ca.key               the development CA (keep ca.key private)
    <out>/<name>/tls.crt  tls.key  ca.crt     order, inventory, payment, notification, caller
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ordermesh_platform.service_names import SERVICE_NAMES

CALLER = "caller"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CERT_FILE, KEY_FILE = "tls.crt", "tls.key"
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=825)

PrivateKey = ec.EllipticCurvePrivateKey


def service_dns_names(
    service: str, namespace: str, cluster_domain: str = "cluster.local"
) -> list[str]:
    """The names a service's certificate carries for in-cluster callers (a release named
    ``ordermesh`` calls its Services ``ordermesh-<service>``, and the headless Services
    order-service dials ``ordermesh-<service>-headless``)."""
    host = f"ordermesh-{service}"
    headless = f"{host}-headless"
    return [
        host,
        f"{host}.{namespace}",
        f"{host}.{namespace}.svc",
        f"{host}.{namespace}.svc.{cluster_domain}",
        f"{headless}.{namespace}.svc",
        f"{headless}.{namespace}.svc.{cluster_domain}",
    ]


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(cls, common_name: str = "ordermesh development CA") -> Authority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(cert, key)

    def save(self, directory: Path) -> None:
        _write(directory / CA_CERT, _cert_pem(self.cert))
        _write(directory / CA_KEY, _key_pem(self.key), private=True)

    def issue(
        self, common_name: str, dns_names: Sequence[str] = (), ips: Sequence[str] = ()
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A leaf certificate for both ends of mTLS (serverAuth and clientAuth)."""
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LEAF_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def write_leaf(
        self,
        directory: Path,
        common_name: str,
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> None:
        cert, key = self.issue(common_name, dns_names, ips)
        _write(directory / CERT_FILE, _cert_pem(cert))
        _write(directory / KEY_FILE, _key_pem(key), private=True)
        _write(directory / CA_CERT, _cert_pem(self.cert))


def create_dev_certs(
    out: Path,
    namespace: str = "ordermesh",
    services: Iterable[str] = SERVICE_NAMES,
    force: bool = False,
) -> list[Path]:
    """The development CA (reused when ``out`` has one) and a certificate folder per
    service and for the caller. Existing folders are kept unless ``force``. Returns the
    folders written."""
    if (out / CA_CERT).is_file() and (out / CA_KEY).is_file() and not force:
        ca = Authority.load(out)
    else:
        ca = Authority.create()
        ca.save(out)
        force = True  # every certificate must come from the new CA
    written = []
    for name in (*services, CALLER):
        folder = out / name
        if (folder / CERT_FILE).is_file() and (folder / KEY_FILE).is_file() and not force:
            continue
        if name == CALLER:
            ca.write_leaf(folder, CALLER, ["ordermesh-caller", "localhost"], ["127.0.0.1"])
        else:
            dns = ["localhost", *service_dns_names(name, namespace)]
            ca.write_leaf(folder, f"ordermesh-{name}", dns, ["127.0.0.1", "::1"])
        written.append(folder)
    return written


# --- development JWTs ------------------------------------------------------------------

JWT_PRIVATE_KEY = "jwt-signing.key"
JWT_PUBLIC_KEY = "jwt-signing.pub"
DEV_ISSUER = "ordermesh-dev"
DEV_AUDIENCE = "ordermesh"
ADMIN_SCOPE = "ordermesh:admin"


def ensure_jwt_keys(directory: Path) -> tuple[Path, Path]:
    """A development ES256 signing key pair under ``directory`` (made once)."""
    private, public = directory / JWT_PRIVATE_KEY, directory / JWT_PUBLIC_KEY
    if not (private.is_file() and public.is_file()):
        key = _new_key()
        _write(private, _key_pem(key), private=True)
        _write(
            public,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    return private, public


def mint_token(
    private_key_file: Path,
    subject: str,
    scopes: Sequence[str] = (),
    *,
    audience: str = DEV_AUDIENCE,
    issuer: str = DEV_ISSUER,
    ttl_s: float = 3600,
    kid: str | None = None,
) -> str:
    """A signed ES256 token as an identity provider would issue it."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        "aud": audience,
        "iss": issuer,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, private_key_file.read_bytes(), algorithm="ES256", headers=headers)
