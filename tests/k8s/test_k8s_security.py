"""mTLS and caller authentication in the chart: certificates mounted from Secrets
(cert-manager's layout), probes that keep working, Certificates, and the checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ordermesh_platform.auth import service_identity
from tests.k8s.chart import RELEASE, REPO, Manifest, Render, RenderError, component, of_kind
from tests.k8s.test_k8s_network_policy import edges, outside_peers
from tests.k8s.test_k8s_workloads import GRPC_NAMES, SERVICES, assert_hardened, env_of

MTLS_VALUES = REPO / "k8s" / "examples" / "values-mtls.yaml"
TLS_ON = ["tls.enabled=true"]
GRPC, HEALTH = 50051, 9465
MOUNT = "/etc/ordermesh/tls"


def deployments(objects: list[Manifest]) -> dict[str, Manifest]:
    return {component(d): d for d in of_kind(objects, "Deployment")}


def main_container(deploy: Manifest) -> dict[str, Any]:
    container: dict[str, Any] = deploy["spec"]["template"]["spec"]["containers"][0]
    return container


def volumes(deploy: Manifest) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}


def test_tls_is_off_by_default(default_objects: list[Manifest]) -> None:
    assert of_kind(default_objects, "Certificate") == []
    for name, deploy in deployments(default_objects).items():
        main = main_container(deploy)
        env = env_of(main)
        assert not [k for k in env if k.startswith(("ORDERMESH_TLS_", "ORDERMESH_AUTH_"))]
        assert "ORDERMESH_HEALTH_PORT" not in env
        assert main["readinessProbe"]["grpc"] == {"port": GRPC, "service": GRPC_NAMES[name]}
        assert {p["name"] for p in main["ports"]} == {"grpc", "metrics"}


def test_with_tls_each_service_mounts_its_secret_and_probes_the_health_port(
    render: Render,
) -> None:
    objects = render(sets=TLS_ON)
    for name, deploy in deployments(objects).items():
        main = main_container(deploy)
        env = env_of(main)
        assert env["ORDERMESH_TLS_CERT_FILE"] == f"{MOUNT}/tls.crt"
        assert env["ORDERMESH_TLS_KEY_FILE"] == f"{MOUNT}/tls.key"
        assert env["ORDERMESH_TLS_CA_FILE"] == f"{MOUNT}/ca.crt"
        assert env["ORDERMESH_HEALTH_PORT"] == str(HEALTH)
        mount = next(m for m in main["volumeMounts"] if m["mountPath"] == MOUNT)
        assert mount["readOnly"] is True
        secret = volumes(deploy)[mount["name"]]["secret"]
        assert secret["secretName"] == f"{RELEASE}-ordermesh-{name}-tls"
        assert secret["defaultMode"] == 0o440
        # Native gRPC probes (no TLS) on the plaintext health-only port.
        assert main["readinessProbe"]["grpc"] == {"port": HEALTH, "service": GRPC_NAMES[name]}
        assert main["livenessProbe"]["grpc"] == {"port": HEALTH, "service": "ordermesh.liveness"}
        assert main["startupProbe"]["grpc"] == {"port": HEALTH, "service": ""}
        assert {p["name"]: p["containerPort"] for p in main["ports"]}["health"] == HEALTH
        assert_hardened(deploy["spec"]["template"]["spec"], f"tls {name}")
    for service in of_kind(objects, "Service"):
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        # The health port stays inside the pod; headless Services carry gRPC only.
        assert set(ports) - {"metrics"} == {"grpc"}
        assert ports["grpc"]["appProtocol"] == "https"


def test_secret_names_can_be_given_per_service(render: Render) -> None:
    objects = render(sets=[*TLS_ON, "tls.secretNames.payment=payment-mtls"])
    deploy = deployments(objects)["payment"]
    assert volumes(deploy)["tls"]["secret"]["secretName"] == "payment-mtls"


def test_the_network_policies_are_the_same_with_tls(
    render: Render, default_objects: list[Manifest], chart_values: dict[str, Any]
) -> None:
    # Kubelet probes come from the node, which NetworkPolicies always allow.
    outside = outside_peers(chart_values)
    assert edges(render(sets=TLS_ON), outside) == edges(default_objects, outside)


def test_cert_manager_certificates_serve_the_addresses_callers_dial(render: Render) -> None:
    objects = render(MTLS_VALUES)
    certificates = {component(c): c for c in of_kind(objects, "Certificate")}
    assert sorted(certificates) == sorted(SERVICES)
    deploys = deployments(objects)
    order_env = env_of(main_container(deploys["order"]))
    dialled = {
        "inventory": order_env["ORDERMESH_INVENTORY_ADDR"],
        "payment": order_env["ORDERMESH_PAYMENT_ADDR"],
    }
    test_pod = of_kind(objects, "Pod")[0]
    for c in test_pod["spec"]["containers"]:
        dialled.setdefault(c["name"].removeprefix("health-"), c["args"][1])
    for name, cert in certificates.items():
        assert cert["apiVersion"] == "cert-manager.io/v1"
        spec = cert["spec"]
        assert spec["secretName"] == volumes(deploys[name])["tls"]["secret"]["secretName"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"] == {
            "name": "ordermesh-ca",
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
        host = dialled[name].removeprefix("dns:///").rsplit(":", 1)[0]
        assert host in spec["dnsNames"], (name, host)
        # The services recognise each other by these names (ordermesh_platform.auth).
        assert service_identity([spec["commonName"], *spec["dnsNames"]]) == name
        assert spec["privateKey"]["rotationPolicy"] == "Always"


def test_helm_test_checks_over_mtls_with_the_services_certificates(render: Render) -> None:
    (pod,) = of_kind(render(sets=TLS_ON), "Pod")
    pod_volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for c in pod["spec"]["containers"]:
        name = c["name"].removeprefix("health-")
        args = c["args"]
        assert "--tls" in args
        for flag, file in (("--cert", "tls.crt"), ("--key", "tls.key"), ("--ca", "ca.crt")):
            assert args[args.index(flag) + 1] == f"{MOUNT}/{file}"
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == MOUNT)
        secret = pod_volumes[mount["name"]]["secret"]["secretName"]
        assert secret == f"{RELEASE}-ordermesh-{name}-tls"
    assert_hardened(pod["spec"], "helm test pod with tls")


def test_auth_mounts_the_jwks_and_switches_authentication_on(render: Render) -> None:
    objects = render(MTLS_VALUES)
    for deploy in deployments(objects).values():
        main = main_container(deploy)
        env = env_of(main)
        assert env["ORDERMESH_AUTH_ENABLED"] == "true"
        assert env["ORDERMESH_AUTH_JWT_AUDIENCE"] == "ordermesh"
        assert env["ORDERMESH_AUTH_JWT_ISSUER"] == "https://idp.example.com/"
        jwks = Path(env["ORDERMESH_AUTH_JWKS_FILE"])
        mount = next(m for m in main["volumeMounts"] if m["mountPath"] == str(jwks.parent))
        config_map = volumes(deploy)[mount["name"]]["configMap"]
        assert config_map["name"] == "ordermesh-idp-jwks"
        assert config_map["items"] == [{"key": "jwks.json", "path": jwks.name}]
        assert_hardened(deploy["spec"]["template"]["spec"], "auth")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["auth.enabled=true", "auth.jwks.configMap=jwks"], "auth.enabled needs tls.enabled"),
        (["auth.enabled=true", *TLS_ON], "auth.enabled needs a source of token keys"),
        ([*TLS_ON, "tls.certManager.enabled=true"], "needs tls.certManager.issuerRef.name"),
    ],
)
def test_incomplete_security_values_are_refused(
    sets: list[str], message: str, helm_template_error: RenderError
) -> None:
    assert message in helm_template_error(sets)


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("tls:\n  enabled: 'yes'\n", "tls.enabled"),
        ("tls:\n  certManager:\n    privateKeyAlgorithm: DSA\n", "privateKeyAlgorithm"),
        ("tls:\n  certManager:\n    duration: 90 days\n", "duration"),
        ("tls:\n  secretNames:\n    search: x\n", "search"),
        ("auth:\n  jwksFile: /x\n", "jwksFile"),
        ("ports:\n  health: 0\n", "ports.health"),
    ],
)
def test_schema_rejects_bad_security_values(
    content: str, names: str, schema_error: Callable[[str], str]
) -> None:
    assert names in schema_error(content)


def test_the_mtls_example_is_an_overlay_of_the_production_values(render: Render) -> None:
    production = REPO / "k8s" / "examples" / "values-production.yaml"
    objects = render(production, MTLS_VALUES)
    assert len(of_kind(objects, "Certificate")) == 4
    values = yaml.safe_load(MTLS_VALUES.read_text())
    assert set(values) == {"tls", "auth"}
