"""Deployments, their probes, resources and hardening; PDBs, HPAs, the migration
Jobs, Kafka topics, the ServiceMonitor and the helm-test pod, as rendered."""

from __future__ import annotations

from typing import Any

import pytest

from ordermesh_platform.service_names import SERVICE_NAMES
from tests.k8s.chart import NAMESPACE, RELEASE, Manifest, Render, RenderError, component, of_kind

SERVICES = SERVICE_NAMES  # the chart deploys each service of the mesh
GRPC_NAMES = {
    "order": "ordermesh.order.v1.OrderService",
    "inventory": "ordermesh.inventory.v1.InventoryService",
    "payment": "ordermesh.payment.v1.PaymentService",
    "notification": "ordermesh.notification.v1.NotificationService",
}
VALUE_SETS = ["default_objects", "production_objects"]
HOOK = "pre-install,pre-upgrade"


def objects_of(request: pytest.FixtureRequest, name: str) -> list[Manifest]:
    objects: list[Manifest] = request.getfixturevalue(name)
    return objects


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def assert_hardened(pod_spec: dict[str, Any], where: str) -> None:
    pod_sc = pod_spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True, where
    assert pod_sc["runAsUser"] == 10001, where
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
    assert pod_spec["automountServiceAccountToken"] is False, where
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    for c in containers(pod_spec):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"] == {"drop": ["ALL"]}, where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert sc.get("privileged", False) is False, where
        # /tmp is the only writable path: an emptyDir. Anything else mounted is a
        # read-only Secret or ConfigMap (certificates, token keys).
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], where
        for path, mount in mounts.items():
            if path != "/tmp":
                assert mount.get("readOnly") is True, f"{where}: {path}"
                assert {"secret", "configMap"} & set(volumes[mount["name"]]), f"{where}: {path}"
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert c["resources"][bound][resource], f"{where}: {bound}.{resource}"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_one_deployment_and_service_per_service(
    value_set: str, request: pytest.FixtureRequest
) -> None:
    objects = objects_of(request, value_set)
    assert sorted(component(d) for d in of_kind(objects, "Deployment")) == sorted(SERVICES)
    cluster_ip = [s for s in of_kind(objects, "Service") if s["spec"].get("clusterIP") != "None"]
    services = {component(s): s for s in cluster_ip}
    assert len(cluster_ip) == len(services) == len(SERVICES)
    assert sorted(services) == sorted(SERVICES)
    for svc in services.values():
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        assert ports == {"grpc": 50051, "metrics": 9464}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_deployments_have_grpc_probes_resources_and_hardening(
    value_set: str, request: pytest.FixtureRequest
) -> None:
    for deploy in of_kind(objects_of(request, value_set), "Deployment"):
        name = component(deploy)
        spec = deploy["spec"]["template"]["spec"]
        (main,) = spec["containers"]
        assert main["args"] == ["serve", name]
        readiness, liveness = main["readinessProbe"], main["livenessProbe"]
        assert readiness["grpc"] == {"port": 50051, "service": GRPC_NAMES[name]}
        assert liveness["grpc"]["port"] == 50051
        assert liveness["grpc"]["service"] == "ordermesh.liveness"
        assert main["startupProbe"]["grpc"]["port"] == 50051
        assert_hardened(spec, f"{value_set} {name}")
        assert spec["enableServiceLinks"] is False


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_drain_fits_in_the_termination_grace_period(
    value_set: str, request: pytest.FixtureRequest
) -> None:
    for deploy in of_kind(objects_of(request, value_set), "Deployment"):
        spec = deploy["spec"]["template"]["spec"]
        (main,) = spec["containers"]
        sleep = int(main["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = float(env_of(main)["ORDERMESH_SHUTDOWN_GRACE_S"])
        assert sleep > 0
        assert spec["terminationGracePeriodSeconds"] > sleep + grace


def test_terminating_before_the_drain_ends_is_rejected(helm_template_error: RenderError) -> None:
    err = helm_template_error(["defaults.terminationGracePeriodSeconds=12"])
    assert "must exceed preStopSleepSeconds + shutdownGraceSeconds" in err


def test_environment_contract(default_objects: list[Manifest]) -> None:
    deploys = {component(d): d for d in of_kind(default_objects, "Deployment")}
    for name, deploy in deploys.items():
        env = env_of(deploy["spec"]["template"]["spec"]["containers"][0])
        assert env["ORDERMESH_GRPC_HOST"] == "0.0.0.0"
        assert env["ORDERMESH_GRPC_PORT"] == "50051"
        assert env["ORDERMESH_METRICS_PORT"] == "9464"
        assert env["ORDERMESH_MIGRATE_ON_START"] == "false"
        assert env["ORDERMESH_DATABASE_URL"] == {
            "secretKeyRef": {"name": f"ordermesh-{name}-db-app", "key": "uri"}
        }
        assert env["ORDERMESH_KAFKA_BOOTSTRAP"].endswith(":9092")
        assert env["ORDERMESH_MAX_MESSAGE_BYTES"] == "4194304"
        assert env["OTEL_SERVICE_NAME"] == f"{name}-service"
        for var in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
        ):
            assert env[var], var
        assert "k8s.pod.name=$(POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]
    order_env = env_of(deploys["order"]["spec"]["template"]["spec"]["containers"][0])
    # Every pod, through the headless Services (test_k8s_headless.py).
    assert order_env["ORDERMESH_INVENTORY_ADDR"] == (
        f"dns:///{RELEASE}-ordermesh-inventory-headless.{NAMESPACE}.svc.cluster.local:50051"
    )
    assert order_env["ORDERMESH_PAYMENT_ADDR"] == (
        f"dns:///{RELEASE}-ordermesh-payment-headless.{NAMESPACE}.svc.cluster.local:50051"
    )


def test_production_secrets_come_from_existing_secrets(production_objects: list[Manifest]) -> None:
    assert of_kind(production_objects, "Secret") == []
    notification = next(
        d for d in of_kind(production_objects, "Deployment") if component(d) == "notification"
    )
    env = env_of(notification["spec"]["template"]["spec"]["containers"][0])
    assert env["ORDERMESH_WEBHOOK_SECRET"] == {
        "secretKeyRef": {"name": "ordermesh-notification-webhook", "key": "webhook-secret"}
    }
    assert env["ORDERMESH_SMTP_HOST"] == "smtp.mail.example.com"
    assert env["ORDERMESH_KAFKA_CREATE_TOPICS"] == "false"


def test_plain_urls_go_to_chart_secrets_and_roll_the_pods(render: Render) -> None:
    url = "postgresql://u:p@db:5432/order"
    objects = render(sets=[f"services.order.database.url={url}"])
    secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    assert f"{RELEASE}-ordermesh-order" in secrets
    order = next(d for d in of_kind(objects, "Deployment") if component(d) == "order")
    template = order["spec"]["template"]
    assert "checksum/secret" in template["metadata"]["annotations"]
    assert env_of(template["spec"]["containers"][0])["ORDERMESH_DATABASE_URL"] == {
        "secretKeyRef": {"name": f"{RELEASE}-ordermesh-order", "key": "database-url"}
    }
    # The migration Job cannot read the release's Secret at pre-install: it reads
    # the hook's own copy, created before it (lower hook weight).
    job = next(j for j in of_kind(objects, "Job") if component(j) == "migrate-order")
    job_env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    ref = job_env["ORDERMESH_DATABASE_URL"]["secretKeyRef"]
    hook_secret = secrets[ref["name"]]
    assert ref["key"] in hook_secret["data"]
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == HOOK
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_each_service_has_a_pdb(value_set: str, request: pytest.FixtureRequest) -> None:
    objects = objects_of(request, value_set)
    pdbs = {component(p): p for p in of_kind(objects, "PodDisruptionBudget")}
    assert sorted(pdbs) == sorted(SERVICES)
    deploys = {component(d): d for d in of_kind(objects, "Deployment")}
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"] == deploys[name]["spec"]["selector"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_hpa_for_order_inventory_payment_only(
    value_set: str, request: pytest.FixtureRequest
) -> None:
    objects = objects_of(request, value_set)
    hpas = {component(h): h for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert sorted(hpas) == ["inventory", "order", "payment"]
    deploys = {component(d): d for d in of_kind(objects, "Deployment")}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == deploys[name]["metadata"]["name"]
        # The HPA owns the replica count: the Deployment leaves it alone.
        assert "replicas" not in deploys[name]["spec"]
    assert deploys["notification"]["spec"]["replicas"] >= 2


def test_hpa_follows_the_per_service_switch(render: Render) -> None:
    objects = render(
        sets=[
            "services.notification.autoscaling.enabled=true",
            "services.order.autoscaling.enabled=false",
        ]
    )
    assert sorted(component(h) for h in of_kind(objects, "HorizontalPodAutoscaler")) == [
        "inventory",
        "notification",
        "payment",
    ]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_migration_jobs_are_pre_install_and_pre_upgrade_hooks(
    value_set: str, request: pytest.FixtureRequest
) -> None:
    objects = objects_of(request, value_set)
    jobs = {component(j): j for j in of_kind(objects, "Job")}
    assert sorted(jobs) == sorted(f"migrate-{s}" for s in SERVICES)
    for name, job in jobs.items():
        notes = job["metadata"]["annotations"]
        assert notes["helm.sh/hook"] == HOOK
        assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"]
        assert "helm.sh/hook-weight" in notes
        pod = job["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        assert main["args"] == ["migrate", name.removeprefix("migrate-")]
        assert pod["restartPolicy"] == "Never"
        assert_hardened(pod, name)
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in env_of(main)
        # Never the release's own ServiceAccount: it does not exist yet at pre-install.
        service_accounts = {sa["metadata"]["name"]: sa for sa in of_kind(objects, "ServiceAccount")}
        job_sa = service_accounts[pod["serviceAccountName"]]
        assert job_sa["metadata"]["annotations"]["helm.sh/hook"] == HOOK


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_service_account_mounts_no_token(value_set: str, request: pytest.FixtureRequest) -> None:
    accounts = of_kind(objects_of(request, value_set), "ServiceAccount")
    assert accounts
    for sa in accounts:
        assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_topology_spread_over_nodes_and_zones(
    value_set: str, request: pytest.FixtureRequest
) -> None:
    for deploy in of_kind(objects_of(request, value_set), "Deployment"):
        spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        for c in spread:
            assert c["labelSelector"] == deploy["spec"]["selector"]


def test_strimzi_topics(production_objects: list[Manifest]) -> None:
    topics = {t["spec"]["topicName"]: t for t in of_kind(production_objects, "KafkaTopic")}
    base = ["ordermesh.orders.v1", "ordermesh.reservations.v1", "ordermesh.payments.v1"]
    base += ["ordermesh.psp.chargebacks.v1"]
    assert sorted(topics) == sorted([*base, *(f"{t}.dlq" for t in base)])
    for topic in topics.values():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "prod-kafka"
        assert topic["metadata"]["namespace"] == "kafka"
        assert topic["spec"]["partitions"] == 12
        assert topic["spec"]["replicas"] == 3
        assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_topics_partitions_and_replicas_are_configurable(render: Render) -> None:
    objects = render(
        sets=["kafka.topics.mode=strimzi", "kafka.topics.partitions=3", "kafka.topics.replicas=1"]
    )
    topics = of_kind(objects, "KafkaTopic")
    assert len(topics) == 8
    assert {(t["spec"]["partitions"], t["spec"]["replicas"]) for t in topics} == {(3, 1)}


def test_startup_mode_lets_the_services_create_topics(default_objects: list[Manifest]) -> None:
    assert of_kind(default_objects, "KafkaTopic") == []
    for deploy in of_kind(default_objects, "Deployment"):
        env = env_of(deploy["spec"]["template"]["spec"]["containers"][0])
        assert env["ORDERMESH_KAFKA_CREATE_TOPICS"] == "true"
        assert env["ORDERMESH_KAFKA_TOPIC_PARTITIONS"] == "6"


def test_service_monitor(production_objects: list[Manifest]) -> None:
    (monitor,) = of_kind(production_objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_helm_test_pod_checks_every_service(default_objects: list[Manifest]) -> None:
    (pod,) = of_kind(default_objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    checked = {}
    for c in pod["spec"]["containers"]:
        args = c["args"]
        assert args[0] == "health"
        checked[args[args.index("--service") + 1]] = args[1]
    assert checked == {
        GRPC_NAMES[s]: f"{RELEASE}-ordermesh-{s}.{NAMESPACE}.svc.cluster.local:50051"
        for s in SERVICES
    }
    assert_hardened(pod["spec"], "helm test pod")


def test_kafka_bootstrap_and_webhook_secret_sources(render: Render) -> None:
    objects = render(
        sets=[
            "kafka.existingSecret=kafka-client",
            "notification.webhookSecret.value=s3cret",
            "notification.smtp.host=mail.internal",
        ]
    )
    deploys = {component(d): d for d in of_kind(objects, "Deployment")}
    for deploy in deploys.values():
        env = env_of(deploy["spec"]["template"]["spec"]["containers"][0])
        assert env["ORDERMESH_KAFKA_BOOTSTRAP"] == {
            "secretKeyRef": {"name": "kafka-client", "key": "bootstrap"}
        }
    template = deploys["notification"]["spec"]["template"]
    env = env_of(template["spec"]["containers"][0])
    assert env["ORDERMESH_WEBHOOK_SECRET"] == {
        "secretKeyRef": {"name": f"{RELEASE}-ordermesh-notification", "key": "webhook-secret"}
    }
    assert env["ORDERMESH_SMTP_HOST"] == "mail.internal"
    assert "checksum/secret" in template["metadata"]["annotations"]


def test_pdb_min_available_replaces_max_unavailable(render: Render) -> None:
    for pdb in of_kind(render(sets=["defaults.pdb.minAvailable=1"]), "PodDisruptionBudget"):
        assert pdb["spec"]["minAvailable"] == 1
        assert "maxUnavailable" not in pdb["spec"]
