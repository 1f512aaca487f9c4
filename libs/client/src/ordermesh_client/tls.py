"""A client's side of ordermesh's mutual TLS: the certificate, key and CA files, and
the channel credentials that present the certificate and trust the CA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


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


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """The CA that server certificates must chain to, and our certificate as the client's."""
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
