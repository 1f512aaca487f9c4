"""`ordermesh ... --help` reads as prose: paragraphs reflowed to the terminal, never cut
where a docstring's source line ends, no type printed beside a flag, and no command
summary cut short."""

from __future__ import annotations

import itertools

import pytest
import typer
from typer.testing import CliRunner

from ordermesh_cli.main import HELP_WIDTH, app

# click's test runner is an 80-column terminal: narrower than HELP_WIDTH, as many are.
TERMINAL = 80


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [(*prefix, c.name or c.callback.__name__) for c in group.registered_commands]  # type: ignore[union-attr]
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        assert sub.name
        found += _commands(sub.typer_instance, (*prefix, sub.name))
    return found


COMMANDS = _commands(app)


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_found() -> None:
    assert {("up",), ("health",), ("dlq", "list"), ("dlq", "replay")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_flag_shows_a_type(command: tuple[str, ...]) -> None:
    text = _help(*command)
    assert "<bool>" not in text
    assert "--help  " in text.replace("--help ", "--help  ")  # the options are listed


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_description_breaks_a_line_only_where_the_next_word_would_not_fit(
    command: tuple[str, ...],
) -> None:
    text = _help(*command)
    description = text.split("\n\n", 1)[1].split("\nOptions:")[0].split("\nArguments:")[0]
    width = min(TERMINAL, HELP_WIDTH) - 2  # what click fills of the terminal
    for paragraph in description.strip("\n").split("\n\n"):
        lines = paragraph.splitlines()
        for line, following in itertools.pairwise(lines):
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > width, (
                f"{' '.join(command)}: a line broken early, before {next_word!r}:\n{paragraph}"
            )


def test_no_command_summary_is_cut_short() -> None:
    for group in ((), ("dlq",)):
        listed = _help(*group).split("\nCommands:\n", 1)[1]
        for line in listed.splitlines():
            assert not line.rstrip().endswith("..."), line
