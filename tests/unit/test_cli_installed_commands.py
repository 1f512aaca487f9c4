"""The CLI and the bench depend one way: the bench on the CLI. The CLI never imports the
bench; the bench adds its commands through the ``ordermesh.commands`` entry point.

That `ordermesh` works without the bench installed, and then lacks its commands, is
shown on the image's virtualenv, which has no bench (tests/k8s/test_image_contents.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import distribution, requires
from pathlib import Path

import pytest
import typer
from packaging.requirements import Requirement
from typer.testing import CliRunner

import ordermesh_cli
from ordermesh_cli import registry
from ordermesh_cli.main import app

BENCH_COMMANDS = {"bench", "soak", "chaos"}


def _imported_modules(source: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_cli_module_imports_the_bench() -> None:
    package = Path(ordermesh_cli.__file__).parent
    offenders = {
        f"{source.name}: {module}"
        for source in package.rglob("*.py")
        for module in _imported_modules(source)
        if module.split(".")[0] == "ordermesh_bench"
    }
    assert offenders == set()


def _required(dist: str) -> set[str]:
    return {Requirement(r).name for r in requires(dist) or []}


def test_the_bench_requires_the_cli_and_not_the_other_way() -> None:
    assert "ordermesh-cli" in _required("ordermesh-bench")
    assert "ordermesh-bench" not in _required("ordermesh-cli")


def test_the_bench_declares_its_commands_entry_point() -> None:
    declared = [
        e for e in distribution("ordermesh-bench").entry_points if e.group == "ordermesh.commands"
    ]
    assert [(e.name, e.value) for e in declared] == [("bench", "ordermesh_bench.commands:register")]


def test_installed_entry_points_add_their_commands() -> None:
    fresh = typer.Typer()

    @fresh.command()
    def serve() -> None:
        """A command of the CLI's own."""

    registry.add_installed_commands(fresh)
    names = {
        c.name or (c.callback.__name__ if c.callback else "") for c in fresh.registered_commands
    }
    assert names == {"serve", *BENCH_COMMANDS}


def test_no_entry_point_adds_no_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    fresh = typer.Typer()
    registry.add_installed_commands(fresh)
    assert fresh.registered_commands == []


def test_help_lists_the_bench_commands_when_it_is_installed() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line}
    assert listed >= BENCH_COMMANDS | {"serve", "up"}


def test_help_loads_the_bench_commands_but_not_the_bench_suites() -> None:
    """`ordermesh --help` with the bench installed imports its commands module alone:
    not the suites, nor matplotlib."""
    probe = (
        "import sys; from ordermesh_cli.main import app; "
        "print(*sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('ordermesh_bench', 'matplotlib')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert set(result.stdout.split()) == {"ordermesh_bench", "ordermesh_bench.commands"}
