"""Where the chart's services take the token keys from: an OIDC issuer (discovery), a
JWKS URL, or a JWKS file from a ConfigMap; exactly one, and a URL opens the way to the
identity provider in the NetworkPolicies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import REPO, Manifest, Render, RenderError, component, of_kind
from tests.k8s.test_k8s_network_policy import (
    BASE_EGRESS,
    EXPECTED_INGRESS,
    SERVICES,
    edges,
    merged_values,
    outside_peers,
)
from tests.k8s.test_k8s_workloads import assert_hardened, env_of

MTLS_VALUES = REPO / "k8s" / "examples" / "values-mtls.yaml"
ISSUER = "https://idp.example.com/realms/shop"
JWKS_URL = "https://idp.example.com/keys"
IDP_PEER = {"ipBlock": {"cidr": "203.0.113.0/24"}}
REMOTE_SETTINGS = (
    "ORDERMESH_AUTH_JWKS_CACHE_S",
    "ORDERMESH_AUTH_JWKS_MIN_REFRESH_INTERVAL_S",
    "ORDERMESH_AUTH_JWKS_TIMEOUT_S",
)
SOURCE_SETTINGS = (
    "ORDERMESH_AUTH_OIDC_ISSUER",
    "ORDERMESH_AUTH_JWKS_URL",
    "ORDERMESH_AUTH_JWKS_FILE",
)
# auth on, with mTLS; the key source comes from each test.
AUTH_ON: dict[str, Any] = {
    "tls": {"enabled": True},
    "auth": {"enabled": True, "jwks": {"configMap": ""}},
}


def overlay(tmp_path: Path, values: dict[str, Any], name: str = "values") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(merged_values(AUTH_ON, values)))
    return path


def remote(source: dict[str, Any], **jwks: Any) -> dict[str, Any]:
    """Values of a key source fetched from a URL, the identity provider's peer given."""
    auth: dict[str, Any] = {"jwks": dict(jwks)}
    for key, value in source.items():
        if key == "jwks":
            auth["jwks"].update(value)
        else:
            auth[key] = value
    return {"auth": auth, "networkPolicy": {"identityProvider": {"to": [IDP_PEER]}}}


def service_envs(objects: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {
        component(d): env_of(d["spec"]["template"]["spec"]["containers"][0])
        for d in of_kind(objects, "Deployment")
    }


def volume_names(deploy: Manifest) -> set[str]:
    return {v["name"] for v in deploy["spec"]["template"]["spec"]["volumes"]}


def test_an_oidc_issuer_is_passed_on_and_mounts_nothing(render: Render, tmp_path: Path) -> None:
    objects = render(overlay(tmp_path, remote({"oidcIssuer": ISSUER})))
    envs = service_envs(objects)
    assert sorted(envs) == sorted(SERVICES)
    for env in envs.values():
        assert env["ORDERMESH_AUTH_OIDC_ISSUER"] == ISSUER
        assert "ORDERMESH_AUTH_JWKS_URL" not in env
        assert "ORDERMESH_AUTH_JWKS_FILE" not in env
        # Empty: the services require the OIDC issuer as `iss`.
        assert env["ORDERMESH_AUTH_JWT_ISSUER"] == ""
        assert [env[k] for k in REMOTE_SETTINGS] == ["300", "10", "5"]
    for deploy in of_kind(objects, "Deployment"):
        assert "auth-keys" not in volume_names(deploy)
        assert_hardened(deploy["spec"]["template"]["spec"], "oidc issuer")


def test_a_jwks_url_is_passed_on_with_its_fetch_settings(render: Render, tmp_path: Path) -> None:
    values = remote(
        {"jwks": {"url": JWKS_URL}},
        cacheSeconds=600,
        minRefreshIntervalSeconds=0,
        timeoutSeconds=2.5,
    )
    objects = render(overlay(tmp_path, values))
    for env in service_envs(objects).values():
        assert env["ORDERMESH_AUTH_JWKS_URL"] == JWKS_URL
        assert "ORDERMESH_AUTH_OIDC_ISSUER" not in env
        assert "ORDERMESH_AUTH_JWKS_FILE" not in env
        assert [env[k] for k in REMOTE_SETTINGS] == ["600", "0", "2.5"]
    for deploy in of_kind(objects, "Deployment"):
        assert "auth-keys" not in volume_names(deploy)


def test_a_jwks_config_map_leaves_no_trace_of_the_url_settings(render: Render) -> None:
    for env in service_envs(render(MTLS_VALUES)).values():
        assert env["ORDERMESH_AUTH_JWKS_FILE"]
        assert not [k for k in (*SOURCE_SETTINGS[:2], *REMOTE_SETTINGS) if k in env]


def test_url_values_without_auth_leave_no_trace(
    render: Render, default_objects: list[Manifest]
) -> None:
    objects = render(
        sets=[
            f"auth.jwks.url={JWKS_URL}",
            "networkPolicy.identityProvider.to[0].ipBlock.cidr=203.0.113.0/24",
        ]
    )
    assert objects == default_objects


def test_a_key_url_opens_the_identity_provider_to_the_services_only(
    render: Render, tmp_path: Path, chart_values: dict[str, Any]
) -> None:
    for source in ({"oidcIssuer": ISSUER}, {"jwks": {"url": JWKS_URL}}):
        values = remote(source)
        values["networkPolicy"]["identityProvider"]["ports"] = [8443]
        objects = render(overlay(tmp_path, values, next(iter(source))))
        outside = outside_peers(merged_values(chart_values, values))
        egress, ingress = edges(objects, outside)
        # Neither the migration Jobs nor the helm-test pod check tokens.
        assert egress == BASE_EGRESS | {(s, "identity-provider", "TCP", 8443) for s in SERVICES}
        assert ingress == EXPECTED_INGRESS


def test_a_key_file_opens_no_way_to_the_identity_provider(
    render: Render, tmp_path: Path, chart_values: dict[str, Any]
) -> None:
    values: dict[str, Any] = {
        "auth": {"jwks": {"configMap": "jwks"}},
        "networkPolicy": {"identityProvider": {"to": [IDP_PEER]}},
    }
    objects = render(overlay(tmp_path, values))
    egress, _ = edges(objects, outside_peers(merged_values(chart_values, values)))
    assert egress == BASE_EGRESS


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (
            [f"auth.oidcIssuer={ISSUER}", f"auth.jwks.url={JWKS_URL}"],
            "auth.oidcIssuer, auth.jwks.url",
        ),
        (
            [f"auth.oidcIssuer={ISSUER}", "auth.jwks.configMap=jwks"],
            "auth.oidcIssuer, auth.jwks.configMap",
        ),
        (
            [f"auth.jwks.url={JWKS_URL}", "auth.jwks.configMap=jwks"],
            "auth.jwks.url, auth.jwks.configMap",
        ),
    ],
)
@pytest.mark.parametrize("enabled", ["true", "false"])
def test_two_key_sources_are_refused_with_their_names(
    sets: list[str], named: str, enabled: str, helm_template_error: RenderError
) -> None:
    err = helm_template_error(["tls.enabled=true", f"auth.enabled={enabled}", *sets])
    assert f"set one source of token keys, not 2: {named}" in err


def test_three_key_sources_are_refused(helm_template_error: RenderError) -> None:
    err = helm_template_error(
        [f"auth.oidcIssuer={ISSUER}", f"auth.jwks.url={JWKS_URL}", "auth.jwks.configMap=jwks"]
    )
    assert "set one source of token keys, not 3" in err


@pytest.mark.parametrize("source", [f"auth.oidcIssuer={ISSUER}", f"auth.jwks.url={JWKS_URL}"])
def test_a_key_url_without_a_way_to_the_identity_provider_is_refused(
    source: str, helm_template_error: RenderError, render: Render
) -> None:
    sets = ["tls.enabled=true", "auth.enabled=true", source]
    assert "need networkPolicy.identityProvider.to" in helm_template_error(sets)
    # Without NetworkPolicies nothing stands in the way.
    assert of_kind(render(sets=[*sets, "networkPolicy.enabled=false"]), "Deployment")


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("auth:\n  jwks:\n    url: ftp://idp.example.com/keys\n", "auth.jwks.url"),
        ("auth:\n  oidcIssuer: idp.example.com\n", "auth.oidcIssuer"),
        ("auth:\n  jwks:\n    cacheSeconds: 0\n", "auth.jwks.cacheSeconds"),
        ("auth:\n  jwks:\n    timeoutSeconds: '5'\n", "auth.jwks.timeoutSeconds"),
        ("auth:\n  jwks:\n    minRefreshIntervalSeconds: -1\n", "minRefreshIntervalSeconds"),
        ("auth:\n  jwks:\n    refreshSeconds: 10\n", "refreshSeconds"),
        ("networkPolicy:\n  identityProvider:\n    cidrs: []\n", "cidrs"),
    ],
)
def test_schema_rejects_bad_key_source_values(
    content: str, names: str, schema_error: Callable[[str], str]
) -> None:
    assert names in schema_error(content)
