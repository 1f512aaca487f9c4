"""Development certificates (`ordermesh certs`) and the TLS settings."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from ordermesh_cli.main import app
from ordermesh_platform.devcerts import CALLER, create_dev_certs
from ordermesh_platform.service_names import SERVICE_NAMES as SERVICES
from ordermesh_platform.settings import ServiceSettings
from ordermesh_platform.tls import TlsFiles


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_command_makes_a_ca_and_a_folder_per_service_and_caller(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = CliRunner().invoke(app, ["certs", "--out", str(out), "--namespace", "shop"])
    assert result.exit_code == 0, result.output
    ca = _cert(out / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in (*SERVICES, CALLER):
        files = TlsFiles.in_dir(out / name)
        leaf = _cert(files.cert)
        leaf.verify_directly_issued_by(ca)
        assert _cert(files.ca) == ca
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
        assert "localhost" in dns
        assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
        cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        if name == CALLER:
            assert cn == "caller"
        else:
            assert cn == f"ordermesh-{name}"
            assert {
                f"ordermesh-{name}",
                f"ordermesh-{name}.shop.svc",
                f"ordermesh-{name}.shop.svc.cluster.local",
            } <= set(dns)
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


def test_certs_are_kept_unless_forced(tmp_path: Path) -> None:
    first = create_dev_certs(tmp_path)
    assert len(first) == len(SERVICES) + 1
    before = (tmp_path / "order" / "tls.crt").read_bytes()
    assert create_dev_certs(tmp_path) == []
    assert (tmp_path / "order" / "tls.crt").read_bytes() == before
    (tmp_path / "payment" / "tls.crt").unlink()
    assert create_dev_certs(tmp_path) == [tmp_path / "payment"]
    _cert(tmp_path / "payment" / "tls.crt").verify_directly_issued_by(_cert(tmp_path / "ca.crt"))
    create_dev_certs(tmp_path, force=True)
    assert (tmp_path / "order" / "tls.crt").read_bytes() != before


def test_tls_settings_are_all_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().tls_files() is None
    monkeypatch.setenv("ORDERMESH_TLS_CERT_FILE", "/tls/tls.crt")
    with pytest.raises(ValueError, match="set all three or none"):
        ServiceSettings()
    monkeypatch.setenv("ORDERMESH_TLS_KEY_FILE", "/tls/tls.key")
    monkeypatch.setenv("ORDERMESH_TLS_CA_FILE", "/tls/ca.crt")
    assert ServiceSettings().tls_files() == TlsFiles.in_dir(Path("/tls"))


def test_security_is_off_and_shedding_on_by_default() -> None:
    settings = ServiceSettings()
    assert settings.auth_enabled is False
    assert settings.tls_files() is None
    assert settings.max_in_flight == 256
    assert settings.health_port == 0


def test_certs_warns_when_its_folder_could_be_committed(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    exposed = CliRunner().invoke(app, ["certs", "--out", str(tmp_path / "certs")])
    assert exposed.exit_code == 0, exposed.output
    assert "not ignored: a commit could carry the CA key" in exposed.output
    (tmp_path / ".gitignore").write_text(".ordermesh/\n")
    ignored = CliRunner().invoke(app, ["certs", "--out", str(tmp_path / ".ordermesh" / "certs")])
    assert ignored.exit_code == 0, ignored.output
    assert "warning" not in ignored.output
