"""Mutual TLS for every gRPC hop: server credentials that require a client certificate
from the configured CA, and channel credentials presenting the same certificate.

Switched on by ORDERMESH_TLS_CERT_FILE, ORDERMESH_TLS_KEY_FILE and ORDERMESH_TLS_CA_FILE
(all three, or none). The file names match cert-manager's Secret keys (tls.crt, tls.key,
ca.crt), so a mounted Secret is used as it is.
"""

from __future__ import annotations

import os

import grpc

from ordermesh_client.tls import TlsFiles as TlsFiles
from ordermesh_client.tls import channel_credentials as channel_credentials
from ordermesh_platform.logs import get_logger

log = get_logger(__name__)


def _mtimes(files: TlsFiles) -> tuple[int, ...]:
    return tuple(os.stat(p).st_mtime_ns for p in (files.cert, files.key, files.ca))


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """mTLS: the server's certificate, and a client certificate signed by the CA required
    of every caller. The files are read again when they change (cert-manager renews them
    in place), so a renewal needs no restart for new connections."""
    state = {"mtimes": _mtimes(files)}

    def configuration() -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(files.key.read_bytes(), files.cert.read_bytes())],
            root_certificates=files.ca.read_bytes(),
        )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC before each handshake; None keeps the current configuration.
        try:
            mtimes = _mtimes(files)
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
