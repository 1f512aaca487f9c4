"""docs/settings.md is what `ordermesh settings` prints: every setting of every
service, so the reference cannot fall behind the settings models."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ordermesh_cli.main import app
from ordermesh_cli.registry import load_service
from ordermesh_platform.service_names import SERVICE_NAMES

DOC = Path(__file__).parents[2] / "docs" / "settings.md"


def test_docs_settings_md_is_the_commands_output() -> None:
    printed = CliRunner().invoke(app, ["settings"])
    assert printed.exit_code == 0, printed.output
    assert DOC.read_text() == printed.output, (
        "docs/settings.md is stale: run `.venv/bin/ordermesh settings > docs/settings.md`"
    )


def test_every_setting_of_every_service_is_listed_with_a_meaning() -> None:
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[3].strip()
        for line in DOC.read_text().splitlines()
        if line.startswith("| `ORDERMESH_")
    }
    for service in SERVICE_NAMES:
        model = load_service(service).settings_type
        for name in model.model_fields:
            variable = f"ORDERMESH_{name.upper()}"
            assert variable in rows, f"{service}: {variable} not in docs/settings.md"
            assert rows[variable], f"{variable} has no meaning: give its Field a description"
