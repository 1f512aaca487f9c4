"""The chart adapted to its platform (k8s/examples/values-platform.yaml on top of the
production values): KEDA on consumer lag, extra HPA metrics, OpenShift's security
contexts, sidecar-injecting meshes, GitOps without hooks, the extension points, routes
to order-service, use as a subchart, and the guard on removed values. Every option
switched off again leaves no trace."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ordermesh_notification.handler import NotificationHandler
from tests.k8s.chart import (
    CHART,
    NAMESPACE,
    PLATFORM_VALUES,
    PRODUCTION_VALUES,
    RELEASE,
    Manifest,
    Render,
    RenderError,
    component,
    helm_env,
    of_kind,
    parse,
)
from tests.k8s.test_k8s_workloads import SERVICES, assert_hardened, env_of
from tests.support.metrics_catalog import problems

HOOK = "pre-install,pre-upgrade"


def deployments(objects: list[Manifest]) -> dict[str, Manifest]:
    return {component(d): d for d in of_kind(objects, "Deployment")}


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def write_values(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "override.yaml"
    path.write_text(content)
    return path


# --- every option off again -------------------------------------------------------


def _names(objects: list[Manifest]) -> set[str]:
    return {o["metadata"]["name"] for o in objects}


def _containers(objects: list[Manifest]) -> list[dict[str, Any]]:
    return [c for d in of_kind(objects, "Deployment") for c in pod_spec(d)["containers"]]


def _job_pods(objects: list[Manifest]) -> list[Manifest]:
    return [j["spec"]["template"] for j in of_kind(objects, "Job")]


# (option, the values that switch it off, what it leaves in the rendered objects)
OPTION_SWITCHES: list[tuple[str, str, Callable[[list[Manifest]], bool]]] = [
    (
        "extraObjects",
        "extraObjects: []\n",
        lambda objs: f"{RELEASE}-ordermesh-istio" in _names(objs),
    ),
    (
        "commonLabels",
        "commonLabels: null\n",
        lambda objs: any("cost-center" in (o["metadata"].get("labels") or {}) for o in objs),
    ),
    (
        "commonAnnotations",
        "commonAnnotations: null\n",
        lambda objs: any("owner" in (o["metadata"].get("annotations") or {}) for o in objs),
    ),
    (
        "autoscaling.extraMetrics",
        "defaults:\n  autoscaling:\n    extraMetrics: []\n",
        lambda objs: any(
            m["type"] == "Pods"
            for h in of_kind(objs, "HorizontalPodAutoscaler")
            for m in h["spec"]["metrics"]
        ),
    ),
    (
        "extraEnvFrom",
        "defaults:\n  extraEnvFrom: []\n",
        lambda objs: any("envFrom" in c for c in _containers(objs)),
    ),
    (
        "extraVolumes",
        "defaults:\n  extraVolumes: []\n  extraVolumeMounts: []\n",
        lambda objs: any(
            v["name"] == "company-ca"
            for d in of_kind(objs, "Deployment")
            for v in pod_spec(d)["volumes"]
        ),
    ),
    (
        "initContainers",
        "defaults:\n  initContainers: []\n",
        lambda objs: any("initContainers" in pod_spec(d) for d in of_kind(objs, "Deployment")),
    ),
    (
        "sidecars",
        "defaults:\n  sidecars: []\n",
        lambda objs: any(c["name"] == "log-shipper" for c in _containers(objs)),
    ),
    (
        "topologySpreadConstraints",
        "defaults:\n  topologySpreadConstraints: []\n",
        lambda objs: any(
            c["topologyKey"] == "example.com/rack"
            for d in of_kind(objs, "Deployment")
            for c in pod_spec(d)["topologySpreadConstraints"]
        ),
    ),
    (
        "serviceMonitor relabelings",
        "serviceMonitor:\n  relabelings: []\n  metricRelabelings: []\n",
        lambda objs: any(
            "relabelings" in e or "metricRelabelings" in e
            for m in of_kind(objs, "ServiceMonitor")
            for e in m["spec"]["endpoints"]
        ),
    ),
    (
        "migrations.hook false",
        "migrations:\n  hook: true\n",
        lambda objs: any(
            "helm.sh/hook" not in (j["metadata"].get("annotations") or {})
            for j in of_kind(objs, "Job")
        ),
    ),
    (
        "migrations.ttlSecondsAfterFinished",
        "migrations:\n  ttlSecondsAfterFinished: null\n",
        lambda objs: any("ttlSecondsAfterFinished" in j["spec"] for j in of_kind(objs, "Job")),
    ),
    (
        "migrations pod settings",
        "migrations:\n  podAnnotations: null\n  podLabels: null\n  priorityClassName: ''\n"
        "  tolerations: []\n  affinity: null\n",
        lambda objs: any(
            "annotations" in p["metadata"]
            or "sidecar.istio.io/inject" in p["metadata"]["labels"]
            or p["spec"].get("priorityClassName") == "ordermesh-batch"
            or "affinity" in p["spec"]
            or "tolerations" in p["spec"]
            for p in _job_pods(objs)
        ),
    ),
    (
        "tests pod settings",
        "tests:\n  podAnnotations: null\n  podLabels: null\n  priorityClassName: ''\n"
        "  tolerations: []\n",
        lambda objs: any(
            "sidecar.istio.io/inject" in p["metadata"]["annotations"]
            or "priorityClassName" in p["spec"]
            or "tolerations" in p["spec"]
            for p in of_kind(objs, "Pod")
        ),
    ),
]


@pytest.mark.parametrize(
    ("option", "off", "footprint"), OPTION_SWITCHES, ids=[o[0] for o in OPTION_SWITCHES]
)
def test_switching_an_option_off_removes_what_it_adds(
    option: str,
    off: str,
    footprint: Callable[[list[Manifest]], bool],
    render: Render,
    platform_objects: list[Manifest],
    tmp_path: Path,
) -> None:
    assert footprint(platform_objects), f"{option} leaves no trace with every option on"
    objects = render(PRODUCTION_VALUES, PLATFORM_VALUES, write_values(tmp_path, off))
    assert not footprint(objects), f"{option} is still rendered once switched off"


# --- KEDA on the consumer's lag ----------------------------------------------------


def test_keda_scales_notification_on_the_lag_of_every_topic_it_consumes(
    platform_objects: list[Manifest],
) -> None:
    (scaled,) = of_kind(platform_objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    notification = deployments(platform_objects)["notification"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": notification["metadata"]["name"],
    }
    topics = [t["metadata"]["topic"] for t in spec["triggers"]]
    assert sorted(topics) == sorted(NotificationHandler.topics)
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == "ordermesh-notification"
        assert meta["bootstrapServers"] == "prod-kafka-kafka-bootstrap.kafka.svc.cluster.local:9092"
        assert meta["allowIdleConsumers"] == "false"
        assert meta["lagThreshold"] == "500"
    # Capped at the partition count (12 in the production values), at least one pod.
    assert spec["maxReplicaCount"] == 12
    assert spec["minReplicaCount"] == 1
    # KEDA owns the replica count: no replicas in the Deployment, no HPA of the chart.
    assert "replicas" not in notification["spec"]
    hpas = {component(h) for h in of_kind(platform_objects, "HorizontalPodAutoscaler")}
    assert "notification" not in hpas


def test_keda_follows_the_consumer_group_and_a_bootstrap_from_a_secret(render: Render) -> None:
    objects = render(
        sets=[
            "notification.keda.enabled=true",
            "kafka.existingSecret=kafka-client",
            "services.notification.env.ORDERMESH_CONSUMER_GROUP=mail-senders",
            "notification.keda.maxReplicas=4",
        ]
    )
    (scaled,) = of_kind(objects, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["envSourceContainerName"] == "notification"
    assert scaled["spec"]["maxReplicaCount"] == 4
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert meta["bootstrapServersFromEnv"] == "ORDERMESH_KAFKA_BOOTSTRAP"
        assert "bootstrapServers" not in meta
        assert meta["consumerGroup"] == "mail-senders"
    container = pod_spec(deployments(objects)["notification"])["containers"][0]
    assert "ORDERMESH_KAFKA_BOOTSTRAP" in env_of(container)


def test_keda_also_scales_notification_on_the_deliveries_due_given_a_prometheus(
    render: Render,
) -> None:
    address = "http://prometheus-operated.monitoring.svc:9090"
    objects = render(
        sets=[
            "notification.keda.enabled=true",
            f"notification.keda.deliveries.prometheusServerAddress={address}",
            "notification.keda.deliveries.perReplica=200",
        ]
    )
    (scaled,) = of_kind(objects, "ScaledObject")
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"kafka", "prometheus"}
    meta = triggers["prometheus"]["metadata"]
    assert meta["serverAddress"] == address
    assert meta["threshold"] == "200"
    assert meta["query"] == f'max(ordermesh_notifications_due{{namespace="{NAMESPACE}"}})'
    assert not problems(meta["query"]), problems(meta["query"])
    # Without an address, the lag alone.
    (plain,) = of_kind(render(sets=["notification.keda.enabled=true"]), "ScaledObject")
    assert {t["type"] for t in plain["spec"]["triggers"]} == {"kafka"}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["notification.keda.enabled=true", "notification.keda.maxReplicas=7"],
            "notification.keda.maxReplicas (7) exceeds kafka.topics.partitions (6)",
        ),
        (
            ["notification.keda.enabled=true", "services.notification.autoscaling.enabled=true"],
            "KEDA creates its own HPA for notification",
        ),
    ],
)
def test_keda_refuses_idle_consumers_and_a_second_hpa(
    sets: list[str], message: str, helm_template_error: RenderError
) -> None:
    assert message in helm_template_error(sets)


def test_extra_metrics_come_beside_cpu(platform_objects: list[Manifest]) -> None:
    for hpa in of_kind(platform_objects, "HorizontalPodAutoscaler"):
        metrics = hpa["spec"]["metrics"]
        assert metrics[0]["resource"]["name"] == "cpu"
        pods = [m["pods"] for m in metrics if m["type"] == "Pods"]
        assert pods == [
            {
                "metric": {"name": "ordermesh_rpc_in_flight"},
                "target": {"type": "AverageValue", "averageValue": "40"},
            }
        ]


# --- security contexts (OpenShift) --------------------------------------------------


def _all_pods(objects: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    pods = [(d["metadata"]["name"], pod_spec(d)) for d in of_kind(objects, "Deployment")]
    pods += [(j["metadata"]["name"], pod_spec(j)) for j in of_kind(objects, "Job")]
    pods += [(p["metadata"]["name"], p["spec"]) for p in of_kind(objects, "Pod")]
    return pods


def test_openshift_leaves_the_uid_to_the_platform_and_keeps_the_rest(
    platform_objects: list[Manifest],
) -> None:
    pods = _all_pods(platform_objects)
    assert len(pods) == 4 + 4 + 1
    for name, spec in pods:
        pod_sc = spec["securityContext"]
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod_sc), name
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        ours = [c for c in spec["containers"] if c["name"] not in ("log-shipper",)]
        for c in ours:
            sc = c["securityContext"]
            assert not {"runAsUser", "runAsGroup"} & set(sc), name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name


def test_a_security_context_set_to_null_is_left_out(render: Render) -> None:
    objects = render(
        sets=["defaults.podSecurityContext=null", "defaults.containerSecurityContext=null"]
    )
    for name, spec in _all_pods(objects):
        assert "securityContext" not in spec, name
        for c in spec["containers"]:
            assert "securityContext" not in c, name


def test_the_defaults_stay_hardened(default_objects: list[Manifest]) -> None:
    for name, spec in _all_pods(default_objects):
        assert_hardened(spec, name)


# --- migration Jobs and the test pod: meshes and GitOps -----------------------------


def test_jobs_and_the_test_pod_take_their_own_pod_settings(
    platform_objects: list[Manifest],
) -> None:
    for job in of_kind(platform_objects, "Job"):
        template = job["spec"]["template"]
        assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
        assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
        spec = template["spec"]
        assert spec["priorityClassName"] == "ordermesh-batch"
        assert spec["tolerations"][0]["key"] == "batch"
        assert "nodeAffinity" in spec["affinity"]
    (pod,) = of_kind(platform_objects, "Pod")
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"]["team"] == "checkout"
    assert pod["spec"]["priorityClassName"] == "ordermesh-batch"
    for c in pod["spec"]["containers"]:
        assert c["resources"]["requests"]["cpu"] == "20m"
    # The services keep theirs: the sidecar is injected there.
    for deploy in of_kind(platform_objects, "Deployment"):
        annotations = deploy["spec"]["template"]["metadata"]["annotations"]
        assert annotations["sidecar.istio.io/inject"] == "true"
        assert pod_spec(deploy)["priorityClassName"] == "ordermesh-critical"


def test_without_hooks_the_jobs_are_plain_and_the_services_migrate_too(
    platform_objects: list[Manifest],
) -> None:
    jobs = of_kind(platform_objects, "Job")
    assert sorted(component(j) for j in jobs) == sorted(f"migrate-{s}" for s in SERVICES)
    for job in jobs:
        notes = job["metadata"]["annotations"]
        assert not [k for k in notes if k.startswith("helm.sh/")]
        assert notes["argocd.argoproj.io/sync-wave"] == "-1"
        assert job["spec"]["ttlSecondsAfterFinished"] == 3600
        # The release's own ServiceAccount: no hook objects exist.
        assert pod_spec(job)["serviceAccountName"] == f"{RELEASE}-ordermesh"
    hooks = [
        o for o in platform_objects if "helm.sh/hook" in (o["metadata"].get("annotations") or {})
    ]
    assert [o["kind"] for o in hooks] == ["Pod"]  # only the helm-test pod
    for deploy in of_kind(platform_objects, "Deployment"):
        assert env_of(pod_spec(deploy)["containers"][0])["ORDERMESH_MIGRATE_ON_START"] == "true"


def _job_names(objects: list[Manifest]) -> dict[str, str]:
    return {component(j): j["metadata"]["name"] for j in of_kind(objects, "Job")}


def test_a_plain_job_is_renamed_when_what_it_runs_changes(render: Render) -> None:
    plain = ["migrations.hook=false"]
    names = _job_names(render(sets=plain))
    assert _job_names(render(sets=plain)) == names  # the same values: the same Jobs
    for name in names.values():
        assert len(name) <= 63
    changed = _job_names(render(sets=[*plain, "defaults.image.tag=0.2.0"]))
    assert set(changed.values()).isdisjoint(names.values())
    # A change that leaves the Jobs' pods as they are keeps their names.
    assert _job_names(render(sets=[*plain, "defaults.replicas=5"])) == names


def test_without_hooks_a_plain_database_url_comes_from_the_release_secret(
    render: Render,
) -> None:
    objects = render(
        sets=["migrations.hook=false", "services.order.database.url=postgresql://u:p@db/o"]
    )
    job = next(j for j in of_kind(objects, "Job") if component(j) == "migrate-order")
    ref = env_of(pod_spec(job)["containers"][0])["ORDERMESH_DATABASE_URL"]["secretKeyRef"]
    assert ref == {"name": f"{RELEASE}-ordermesh-order", "key": "database-url"}
    assert f"{RELEASE}-ordermesh-migrate" not in _names(of_kind(objects, "Secret"))


# --- extension points ---------------------------------------------------------------


def test_extension_points_reach_every_service(platform_objects: list[Manifest]) -> None:
    for name, deploy in deployments(platform_objects).items():
        spec = pod_spec(deploy)
        assert [c["name"] for c in spec["initContainers"]] == ["wait-for-dns"]
        assert [c["name"] for c in spec["containers"]] == [name, "log-shipper"]
        main = spec["containers"][0]
        assert main["envFrom"] == [
            {"configMapRef": {"name": "checkout-shared-settings"}},
            {
                "secretRef": {"name": "checkout-shared-secrets", "optional": True},
                "prefix": "SHARED_",
            },
        ]
        mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
        assert mounts["/etc/ssl/company"]["readOnly"] is True
        assert mounts["/tmp"]["name"] == "tmp"  # the chart's own stay
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["company-ca"] == {
            "name": "company-ca",
            "configMap": {"name": "company-ca-bundle"},
        }
        keys = [c["topologyKey"] for c in spec["topologySpreadConstraints"]]
        assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone", "example.com/rack"]


def test_common_labels_and_annotations_are_on_every_object_and_in_no_selector(
    platform_objects: list[Manifest],
) -> None:
    for obj in platform_objects:
        if obj["metadata"]["name"] == f"{RELEASE}-ordermesh-istio":
            continue  # an extraObject: exactly what the values say
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["cost-center"] == "cc-1042", where
        assert obj["metadata"]["annotations"]["owner"] == "checkout-platform@example.com", where
        template = obj.get("spec", {}).get("template")
        if template is not None:
            assert template["metadata"]["labels"]["cost-center"] == "cc-1042", where
        selector = obj.get("spec", {}).get("selector")
        if isinstance(selector, dict):
            assert "cost-center" not in json.dumps(selector), where


def test_extra_objects_go_through_tpl(platform_objects: list[Manifest]) -> None:
    extra = next(
        o for o in platform_objects if o["metadata"]["name"] == f"{RELEASE}-ordermesh-istio"
    )
    assert extra["kind"] == "NetworkPolicy"
    assert extra["metadata"]["namespace"] == NAMESPACE
    assert extra["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": RELEASE}


def test_extra_objects_may_be_strings(render: Render, tmp_path: Path) -> None:
    values = write_values(
        tmp_path,
        "extraObjects:\n"
        "  - |\n"
        "    apiVersion: v1\n"
        "    kind: ConfigMap\n"
        "    metadata:\n"
        "      name: {{ .Release.Name }}-extra\n"
        "    data:\n"
        "      namespace: {{ .Release.Namespace }}\n",
    )
    extra = next(
        c
        for c in of_kind(render(values), "ConfigMap")
        if c["metadata"]["name"] == f"{RELEASE}-extra"
    )
    assert extra["data"] == {"namespace": NAMESPACE}


# --- routes to order-service --------------------------------------------------------


def test_ingress_and_grpc_route_send_only_the_order_service_to_order(
    platform_objects: list[Manifest],
) -> None:
    order = f"{RELEASE}-ordermesh-order"
    (ingress,) = of_kind(platform_objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "orders.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/ordermesh.order.v1.OrderService",
            "pathType": "Prefix",
            "backend": {"service": {"name": order, "port": {"name": "grpc"}}},
        }
    ]
    (route,) = of_kind(platform_objects, "GRPCRoute")
    assert route["spec"]["parentRefs"] == [
        {"name": "public-gateway", "namespace": "gateways", "sectionName": "grpc"}
    ]
    (route_rule,) = route["spec"]["rules"]
    assert route_rule["matches"] == [
        {"method": {"type": "Exact", "service": "ordermesh.order.v1.OrderService"}}
    ]
    assert route_rule["backendRefs"] == [{"name": order, "port": 50051}]
    # Both reach the order Service's gRPC port.
    (service,) = [s for s in of_kind(platform_objects, "Service") if s["metadata"]["name"] == order]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 50051


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["ingress.enabled=true"], "ingress.hosts: at least one host is required"),
        (["grpcRoute.enabled=true"], "grpcRoute.parentRefs: the Gateway"),
    ],
)
def test_a_route_without_where_to_attach_is_refused(
    sets: list[str], message: str, helm_template_error: RenderError
) -> None:
    assert message in helm_template_error(sets)


# --- the chart as a subchart; Chart.yaml ------------------------------------------


def _parent_chart(tmp_path: Path) -> Path:
    parent = tmp_path / "platform"
    (parent / "charts").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "ordermesh")
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: platform\nversion: 1.0.0\n"
        "dependencies:\n"
        f"  - name: ordermesh\n    version: {version}\n"
        "    repository: file://charts/ordermesh\n    condition: ordermesh.enabled\n"
    )
    (parent / "values.yaml").write_text("global:\n  imageRegistry: registry.example.com\n")
    return parent


@pytest.mark.parametrize("enabled", [True, False])
def test_the_chart_works_as_a_subchart_with_a_condition(
    enabled: bool, helm: Path, helm_tmp: Path, tmp_path: Path
) -> None:
    parent = _parent_chart(tmp_path)
    result = subprocess.run(
        [str(helm), "template", RELEASE, str(parent), "--namespace", NAMESPACE,
         "--kube-version", "1.29.0", "--set", f"ordermesh.enabled={str(enabled).lower()}"],
        capture_output=True, text=True, env=helm_env(helm_tmp), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deploys = of_kind(parse(result.stdout), "Deployment")
    assert len(deploys) == (4 if enabled else 0)


def test_chart_yaml_says_where_the_chart_comes_from() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://")
    assert chart["sources"]
    assert all(s.startswith("https://") for s in chart["sources"])
    assert chart["icon"].startswith(("https://", "data:image/"))


# --- removed values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "path"),
    [
        (["defaults.extraEnvFromSecrets[0]=db-extra"], "defaults.extraEnvFromSecrets"),
        (["services.payment.extraEnvFromSecrets[0]=psp"], "services.payment.extraEnvFromSecrets"),
    ],
)
def test_a_removed_value_fails_with_what_replaces_it(
    sets: list[str], path: str, helm_template_error: RenderError
) -> None:
    err = helm_template_error(sets)
    assert f"{path} was removed from the chart: use extraEnvFrom" in err
    assert "secretRef" in err
