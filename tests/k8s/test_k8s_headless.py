"""The headless Services order-service dials, so that its calls reach every pod of
inventory and payment (docs/deploy.md, "How traffic reaches new pods")."""

from __future__ import annotations

import pytest

from ordermesh_platform.targets import grpc_target
from tests.k8s.chart import NAMESPACE, RELEASE, Manifest, Render, component, of_kind
from tests.k8s.test_k8s_workloads import VALUE_SETS, env_of, objects_of

CALLED = ("inventory", "payment")


def headless_services(objects: list[Manifest]) -> dict[str, Manifest]:
    return {
        component(s): s for s in of_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"
    }


def order_env(objects: list[Manifest]) -> dict[str, str]:
    order = next(d for d in of_kind(objects, "Deployment") if component(d) == "order")
    env: dict[str, str] = env_of(order["spec"]["template"]["spec"]["containers"][0])
    return env


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_order_service_dials_every_ready_pod_of_inventory_and_payment(
    value_set: str, request: pytest.FixtureRequest
) -> None:
    objects = objects_of(request, value_set)
    headless = headless_services(objects)
    assert sorted(headless) == sorted(CALLED)
    deployments = {component(d): d for d in of_kind(objects, "Deployment")}
    env = order_env(objects)
    for name, service in headless.items():
        spec = service["spec"]
        # The same pods as the Deployment's, and only ready ones (a draining pod leaves).
        assert spec["selector"] == deployments[name]["spec"]["selector"]["matchLabels"]
        assert spec.get("publishNotReadyAddresses", False) is False
        assert "type" not in spec or spec["type"] == "ClusterIP"
        (port,) = spec["ports"]
        assert (port["name"], port["port"], port["targetPort"]) == ("grpc", 50051, "grpc")
        # A DNS name resolving to every pod, which the client balances round-robin.
        name_dialled = f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        address = env[f"ORDERMESH_{name.upper()}_ADDR"]
        assert address == f"dns:///{name_dialled}:50051"
        assert grpc_target(address) == address


def test_headless_names_follow_the_release_name(render: Render) -> None:
    objects = render(sets=["fullnameOverride=shop-orders"])
    assert sorted(s["metadata"]["name"] for s in headless_services(objects).values()) == [
        "shop-orders-inventory-headless",
        "shop-orders-payment-headless",
    ]
    assert order_env(objects)["ORDERMESH_INVENTORY_ADDR"].startswith(
        f"dns:///shop-orders-inventory-headless.{NAMESPACE}.svc."
    )
    assert RELEASE not in order_env(objects)["ORDERMESH_PAYMENT_ADDR"]


def test_headless_service_names_stay_dns_labels_with_a_long_release_name(render: Render) -> None:
    objects = render(sets=["fullnameOverride=" + "o" * 50])
    names = [s["metadata"]["name"] for s in headless_services(objects).values()]
    assert len(set(names)) == len(CALLED)
    for name in names:
        assert len(name) <= 63, name
        assert name.endswith("-headless"), name
