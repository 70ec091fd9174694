"""Replays and registration in a team: a teammate's drifted environment, a run others cannot
rebuild for two reasons at once, a DVC remote holding a corrupted object, and replays named
after what they replay. Real git repos, DVC cache and remotes, MLflow SQLite store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import dvc, git, mlflow_client, train
from replayml.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _project_store_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_an_unpushed_commit_and_unpushed_data_are_named_together(
    project: Path, tmp_path: Path
) -> None:
    author = project
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(author, "remote", "add", "origin", str(origin))
    dvc(author, "remote", "add", "-d", "-f", "team", str(tmp_path / "team-remote"))  # empty
    git(author, "add", "-A")
    git(author, "commit", "-qm", "the team's DVC remote")
    git(author, "push", "-q", "origin", "main")
    (author / "conf" / "experiment" / "mine.yaml").write_text("# @package _global_\n{}\n")
    git(author, "add", "-A")
    git(author, "commit", "-qm", "not pushed yet")
    run = mlflow_client(author).get_run(train(author, ["model.num_boost_round=5"]).run_id)
    assert run.data.tags["replayml.code.on_remote"] == "false"
    commit = run.data.tags["replayml.code.commit"]
    dvc_hash = run.data.tags["replayml.data.dvc_hash"]

    # a teammate's clone registers the run from the shared store: both blockers at once
    mate = tmp_path / "mate"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(mate)], check=True)
    uri = f"sqlite:///{author / 'mlruns' / 'mlflow.db'}"
    refused = CliRunner().invoke(
        app,
        ["register", run.info.run_id, "--name", "reco-team", "--project", str(mate),
         "--tracking-uri", uri],
        terminal_width=2000,
    )  # fmt: skip
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert f"commit {commit[:12]} was on no branch of the git remote" in said
    assert f"has no copy of data version {dvc_hash}" in said and "dvc push data.dvc" in said
