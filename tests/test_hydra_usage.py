"""Hydra used the way its users know it: quoting, glob sweeps, sweeper params in presets,
`hydra.job.chdir`, logging options, escaped interpolations, and replays of such runs."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from conftest import all_runs, run_train_py

FAST = ["model=popularity", "dates=last_7d"]


def _runs(root: Path, role: str | None = None) -> list:
    return [r for r in all_runs(root) if r.data.tags.get("replayml.sweep.role") == role]


@pytest.mark.slow
def test_recorded_command_redacts_whole_arguments_and_pastes_back_into_a_shell(
    project: Path,
) -> None:
    secret = "hunter2 and more"
    proc = run_train_py(project, *FAST, f"+tags.api_token={secret}", "+tags.x=${model.kind}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    command = run.data.tags["replayml.command"]
    assert "and more" not in command
    assert shlex.split(command) == [
        "train.py", *FAST, "+tags.api_token=***REDACTED***", "+tags.x=${model.kind}"
    ]  # fmt: skip
    assert "'+tags.x=${model.kind}'" in command  # quoted: bash would not substitute it
    (lineage,) = (project / "outputs").rglob("lineage.json")
    assert "and more" not in lineage.read_text()
