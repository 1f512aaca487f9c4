"""Mutual TLS for every gRPC hop: server credentials that require a client certificate
from the configured CA, and channel credentials presenting the same certificate.

Switched on by ORDERMESH_TLS_CERT_FILE, ORDERMESH_TLS_KEY_FILE and ORDERMESH_TLS_CA_FILE
(all three, or none). The file names match cert-manager's Secret keys (tls.crt, tls.key,
ca.crt), so a mounted Secret is used as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        """cert-manager's layout: tls.crt, tls.key, ca.crt."""
        return cls(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")

    @classmethod
    def from_paths(cls, cert: str, key: str, ca: str) -> TlsFiles | None:
        """None when none is given; every one of them when any is."""
        given = [p for p in (cert, key, ca) if p]
        if not given:
            return None
        if len(given) != 3:
            raise ValueError(
                "TLS needs a certificate, its key and the CA (ORDERMESH_TLS_CERT_FILE, "
                "ORDERMESH_TLS_KEY_FILE, ORDERMESH_TLS_CA_FILE): set all three or none"
            )
        return cls(Path(cert), Path(key), Path(ca))

    def env(self) -> dict[str, str]:
        return {
            "ORDERMESH_TLS_CERT_FILE": str(self.cert),
            "ORDERMESH_TLS_KEY_FILE": str(self.key),
            "ORDERMESH_TLS_CA_FILE": str(self.ca),
        }

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in (self.cert, self.key, self.ca))


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """mTLS: the server's certificate, and a client certificate signed by the CA required
    of every caller. The files are read again when they change (cert-manager renews them
    in place), so a renewal needs no restart for new connections."""
    state = {"mtimes": files._mtimes()}

    def configuration() -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(files.key.read_bytes(), files.cert.read_bytes())],
            root_certificates=files.ca.read_bytes(),
        )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC before each handshake; None keeps the current configuration.
        try:
            mtimes = files._mtimes()
            if mtimes == state["mtimes"]:
                return None
            fresh = configuration()
        except (OSError, ValueError) as error:  # half-written during a renewal: next time
            log.warning("TLS files unreadable, keeping the current ones", error=str(error))
            return None
        state["mtimes"] = mtimes
        log.info("TLS certificate reloaded", cert=str(files.cert))
        return fresh

    # The stubs say the fetcher must return a configuration; gRPC documents None as
    # "no change".
    return grpc.dynamic_ssl_server_credentials(
        configuration(),
        fetch,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """The CA that server certificates must chain to, and our certificate as the client's."""
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
