"""The command line's help: every command's renders, and a docstring's line breaks do not break
its sentences in the commands' list (Typer's "rich" mode kept them)."""

from __future__ import annotations

from typing import Any

from typer.main import get_command
from typer.testing import CliRunner

from wiring.cli import app


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(command, "commands", {})
    return [path, *(p for name, sub in subs.items() for p in _paths(sub, (*path, name)))]


def test_every_commands_help_renders() -> None:
    paths = _paths(get_command(app))
    assert len(paths) > 50 and ("incidents", "act") in paths
    for path in paths:
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, (path, shown.output)
        assert "Usage: " in shown.output


def test_a_commands_summary_flows_as_one_paragraph() -> None:
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    (down,) = [line for line in shown.output.splitlines() if "│ down " in line]
    # the docstring breaks its line after "messages"
    assert "exit 1 when the stop left messages in Kafka that the stream" in down
