"""`replayml --help` and every command's help read as written: our flags take no value (only
Typer's own `--help` row shows its `<bool>` type)."""

from __future__ import annotations

from typing import Any

from typer.main import get_command
from typer.testing import CliRunner


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path below `command` (a group's `commands`), the group itself first."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _paths(sub, (*path, name))
    return found


def test_every_help_screen_shows_flags_without_a_value_placeholder() -> None:
    from replayml.cli import app

    root = get_command(app)
    paths = _paths(root)
    assert ("replay",) in paths and ("data", "prepare") in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output, path
        shown = [line for line in result.output.splitlines() if "<bool>" in line]
        assert all("--help" in line for line in shown), (path, shown)
