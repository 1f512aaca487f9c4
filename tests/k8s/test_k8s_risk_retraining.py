"""The risk retraining CronJob (riskRetraining): off by default; on, a valid CronJob
that trains on a window of payment's records (or of an event log on a volume) in the
training image and registers the chosen model with payment's database."""

from __future__ import annotations

import copy
import os
import stat
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import (
    PRODUCTION_VALUES,
    Manifest,
    Render,
    RenderError,
    component,
    helm_path,
    of_kind,
)
from tests.k8s.test_k8s_crd_schemas import VALIDATOR, tools_python
from tests.k8s.test_k8s_workloads import assert_hardened, env_of

ON = ["riskRetraining.enabled=true"]
FROM_EVENTS = [*ON, "riskRetraining.events.volume.persistentVolumeClaim.claimName=risk-events"]
EVENTS_DIR = "/var/lib/ordermesh/risk/events"
BIG_NODES = {"matchExpressions": [{"key": "cpu", "operator": "In", "values": ["big"]}]}
PREFER_BIG_NODES = {
    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": BIG_NODES}]
}


def cronjob(objects: list[Manifest]) -> Manifest:
    (job,) = of_kind(objects, "CronJob")
    return job


def pod_of(job: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["jobTemplate"]["spec"]["template"]
    return spec


def script_of(job: Manifest) -> str:
    (container,) = pod_of(job)["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    assert isinstance(script, str)
    return script


@pytest.mark.parametrize("objects_fixture", ["default_objects", "production_objects"])
def test_off_by_default_renders_nothing(
    objects_fixture: str, request: pytest.FixtureRequest
) -> None:
    objects: list[Manifest] = request.getfixturevalue(objects_fixture)
    assert of_kind(objects, "CronJob") == []
    assert not [o for o in objects if "risk-retraining" in o["metadata"]["name"]]


def test_on_renders_a_cronjob_that_passes_strict_validation(render: Render, tmp_path: Path) -> None:
    objects = render(PRODUCTION_VALUES, sets=ON)
    job = cronjob(objects)
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    assert helm_path().is_file()
    result = subprocess.run(
        [str(tools_python()), str(VALIDATOR), "-k", "1.29.0", "-k", "1.33.0", str(path)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert job["metadata"]["name"] == "om-ordermesh-risk-retraining"
    assert component(job) == "risk-retraining"


def test_the_cronjob_runs_the_training_image_on_its_schedule_one_at_a_time(
    render: Render,
) -> None:
    job = cronjob(render(PRODUCTION_VALUES, sets=ON))
    spec = job["spec"]
    assert spec["schedule"] == "0 3 * * 0"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 3
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    (container,) = pod_of(job)["spec"]["containers"]
    # Payment's repository (the production values'), payment's tag + "-training".
    assert container["image"] == "registry.example.com/platform/ordermesh:0.1.0-training"
    assert cronjob(render(sets=[*ON, "riskRetraining.schedule=@weekly"]))["spec"]["schedule"] == (
        "@weekly"
    )


def test_the_training_image_follows_payment_or_its_own_values(render: Render) -> None:
    def image(*sets: str) -> str:
        (container,) = pod_of(cronjob(render(sets=[*ON, *sets])))["spec"]["containers"]
        value: str = container["image"]
        return value

    assert image("services.payment.image.tag=1.4.2") == "ordermesh:1.4.2-training"
    assert (
        image("services.payment.image.repository=registry.example.com/om")
        == "registry.example.com/om:0.1.0-training"
    )
    assert image("riskRetraining.image.tag=nightly") == "ordermesh:nightly"
    digest = "sha256:" + "a" * 64
    # Payment's digest names payment's image, never the training image.
    assert image(f"services.payment.image.digest={digest}") == "ordermesh:0.1.0-training"
    assert image(f"riskRetraining.image.digest={digest}") == f"ordermesh@{digest}"


def test_by_default_the_pod_has_payments_database_and_no_events_volume(render: Render) -> None:
    (container,) = pod_of(cronjob(render(PRODUCTION_VALUES, sets=ON)))["spec"]["containers"]
    env = env_of(container)
    assert env["ORDERMESH_DATABASE_URL"] == {
        "secretKeyRef": {"name": "ordermesh-payment-db-app", "key": "uri"}
    }
    assert env["ORDERMESH_RISK_MAX_CHALLENGERS"] == "3"
    assert EVENTS_DIR not in {m["mountPath"] for m in container["volumeMounts"]}
    (container,) = pod_of(cronjob(render(sets=[*ON, "riskRetraining.maxChallengers=1"])))["spec"][
        "containers"
    ]
    assert env_of(container)["ORDERMESH_RISK_MAX_CHALLENGERS"] == "1"


def test_with_an_events_volume_the_pod_has_the_events_read_only(render: Render) -> None:
    job = cronjob(render(PRODUCTION_VALUES, sets=FROM_EVENTS))
    pod = pod_of(job)["spec"]
    (container,) = pod["containers"]
    assert env_of(container)["ORDERMESH_DATABASE_URL"] == {
        "secretKeyRef": {"name": "ordermesh-payment-db-app", "key": "uri"}
    }
    assert pod["restartPolicy"] == "Never"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[EVENTS_DIR]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[EVENTS_DIR]["name"]]["persistentVolumeClaim"] == {
        "claimName": "risk-events"
    }
    # Hardened like every pod of the chart; the events volume is the one read-only
    # mount that is neither a Secret nor a ConfigMap.
    hardened = copy.deepcopy(pod)
    hardened["volumes"] = [v for v in hardened["volumes"] if v["name"] != "events"]
    for c in hardened["containers"]:
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != EVENTS_DIR]
    assert_hardened(hardened, "risk-retraining")


def test_a_plain_database_url_comes_from_payments_secret(render: Render) -> None:
    objects = render(sets=[*ON, "services.payment.database.url=postgresql://u:p@db/payment"])
    (container,) = pod_of(cronjob(objects))["spec"]["containers"]
    assert env_of(container)["ORDERMESH_DATABASE_URL"] == {
        "secretKeyRef": {"name": "om-ordermesh-payment", "key": "database-url"}
    }
    secrets = {s["metadata"]["name"] for s in of_kind(objects, "Secret")}
    assert "om-ordermesh-payment" in secrets


def test_pod_settings_come_from_riskretraining_or_else_payment(
    render: Render, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "services": {"payment": {"nodeSelector": {"pool": "payments"}}},
                "riskRetraining": {
                    "podAnnotations": {"sidecar.istio.io/inject": "false"},
                    "podLabels": {"team": "risk"},
                    "tolerations": [{"key": "batch", "operator": "Exists"}],
                    "affinity": {"nodeAffinity": PREFER_BIG_NODES},
                    "priorityClassName": "batch-low",
                    "ttlSecondsAfterFinished": 86400,
                    "startingDeadlineSeconds": 600,
                    "timeZone": "Europe/Paris",
                },
            }
        )
    )  # fmt: skip
    job = cronjob(render(values, sets=ON))
    template = pod_of(job)
    pod = template["spec"]
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert template["metadata"]["labels"]["team"] == "risk"
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "risk-retraining"
    assert pod["nodeSelector"] == {"pool": "payments"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert pod["affinity"] == {"nodeAffinity": PREFER_BIG_NODES}
    assert pod["priorityClassName"] == "batch-low"
    assert job["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] == 86400
    assert job["spec"]["startingDeadlineSeconds"] == 600
    assert job["spec"]["timeZone"] == "Europe/Paris"


def _run_with_stand_in(
    script: str, tmp_path: Path, then: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the job's script with a stand-in `ordermesh` on PATH that records each call's
    arguments (then runs ``then``); the result and the recorded calls."""
    calls = tmp_path / "calls"
    stand_in = tmp_path / "bin" / "ordermesh"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{then}')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{stand_in.parent}:{os.environ['PATH']}",
        "ORDERMESH_DATABASE_URL": "postgresql://payment-db/payment",
    }
    ran = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    return ran, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize(
    ("source", "expected"),
    [(ON, ("--database-url", "postgresql://payment-db/payment")),
     (FROM_EVENTS, ("--events", EVENTS_DIR))],
)  # fmt: skip
def test_the_script_trains_on_the_window_then_registers_the_model(
    render: Render, tmp_path: Path, source: list[str], expected: tuple[str, str]
) -> None:
    """The rendered script, run by sh with a stand-in `ordermesh` that records its
    arguments: train on [now - windowDays, now] from payment's database (or the events
    volume), then register that run's model."""
    sets = [*source, "riskRetraining.windowDays=90", "riskRetraining.maturityDays=30"]
    sets += ["riskRetraining.model=lightgbm"]
    ran, calls = _run_with_stand_in(script_of(cronjob(render(sets=sets))), tmp_path, "")
    assert ran.returncode == 0, ran.stderr
    train, register = (line.split() for line in calls)
    assert train[:2] == ["risk", "train"]
    option = dict(zip(train[2::2], train[3::2], strict=True))
    flag, value = expected
    assert option[flag] == value
    assert {"--events", "--database-url"} & set(option) == {flag}
    assert option["--maturity-days"] == "30"
    since = datetime.fromisoformat(option["--since"])
    until = datetime.fromisoformat(option["--until"])
    assert until - since == timedelta(days=90)
    assert register == ["risk", "register", f"{option['--out']}/lightgbm.json"]


def test_a_failed_training_registers_nothing(render: Render, tmp_path: Path) -> None:
    ran, calls = _run_with_stand_in(script_of(cronjob(render(sets=ON))), tmp_path, "exit 1\n")
    assert ran.returncode != 0
    assert [line.split()[1] for line in calls] == ["train"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ([*ON, "riskRetraining.windowDays=45"], "riskRetraining.windowDays (45) must be above"),
    ],
)  # fmt: skip
def test_unusable_settings_are_refused(
    sets: list[str], message: str, helm_template_error: RenderError
) -> None:
    assert message in helm_template_error(sets)


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("riskRetraining:\n  enabled: 'yes'\n", "riskRetraining.enabled"),
        ("riskRetraining:\n  concurrencyPolicy: Sometimes\n", "riskRetraining.concurrencyPolicy"),
        ("riskRetraining:\n  windowDays: 0\n", "riskRetraining.windowDays"),
        ("riskRetraining:\n  maxChallengers: 0\n", "riskRetraining.maxChallengers"),
        ("riskRetraining:\n  model: xgboost\n", "riskRetraining.model"),
        ("riskRetraining:\n  schedule: daily\n", "riskRetraining.schedule"),
        ("riskRetraining:\n  successfulJobsHistoryLimit: -1\n", "successfulJobsHistoryLimit"),
        ("riskRetraining:\n  image:\n    digest: latest\n", "riskRetraining.image.digest"),
        ("riskRetraining:\n  events:\n    volume: {name: x, emptyDir: {}}\n", "volume"),
        ("riskRetraining:\n  retrain: true\n", "retrain"),
    ],
)
def test_schema_rejects_bad_values(
    content: str, names: str, schema_error: Callable[[str], str]
) -> None:
    assert names in schema_error(content)
