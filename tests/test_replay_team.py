"""Replays and registration in a team: a teammate's drifted environment, a run others cannot
rebuild for two reasons at once, a DVC remote holding a corrupted object, and replays named
after what they replay. Real git repos, DVC cache and remotes, MLflow SQLite store."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REPO, all_runs, dvc, git, mlflow_client, train
from replayml.cli import app
from replayml.errors import DataVersionError
from replayml.lineage.data import file_md5, load_manifest
from replayml.replay import Verdict, replay, replay_config

pytestmark = pytest.mark.slow

OTHER_LIGHTGBM = "4.3.0"


@pytest.fixture(autouse=True)
def _project_store_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def code_project(template_project: Path, tmp_path: Path) -> Path:
    """A copy of the project with replayml's code committed in `src/` (what replays run)."""
    root = tmp_path / "proj"
    shutil.copytree(template_project, root, symlinks=True)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "replayml's code in the project")
    return root


def _other_lightgbm(tmp_path: Path) -> Path:
    """A folder holding another LightGBM, first on PYTHONPATH: a teammate's stale venv."""
    target = tmp_path / "stale-venv-packages"
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    proc = subprocess.run(
        [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         "--python", sys.executable, f"lightgbm=={OTHER_LIGHTGBM}"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"lightgbm=={OTHER_LIGHTGBM} could not be installed: {proc.stderr[-500:]}")
    return target


def _replay_cli(root: Path, run_id: str, pythonpath: Path | None = None):  # noqa: ANN202
    env = {**os.environ, "COLUMNS": "300"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "replayml", "replay", run_id, "--project", str(root)],
        cwd=root, capture_output=True, text=True, check=False, timeout=600, env=env,
    )  # fmt: skip


def test_a_replay_in_a_drifted_environment_does_not_overrule_the_runs_own(
    code_project: Path, tmp_path: Path
) -> None:
    root = code_project
    stale = _other_lightgbm(tmp_path)
    ours = importlib.metadata.version("lightgbm")
    run_id = train(root).run_id
    client = mlflow_client(root)
    run_name = client.get_run(run_id).info.run_name

    # a teammate with a stale venv replays first: DIFFERENT, and it says where it ran
    drifted = _replay_cli(root, run_id, stale)
    assert drifted.returncode == 1, drifted.stdout[-3000:] + drifted.stderr[-3000:]
    assert f"LightGBM {ours} vs {OTHER_LIGHTGBM}" in drifted.stdout
    tags = client.get_run(run_id).data.tags
    assert tags["replayml.replay.verdict"] == "DIFFERENT"
    assert f"env.lightgbm {ours} -> {OTHER_LIGHTGBM}" in tags["replayml.replay.environment"]
    first_replay = tags["replayml.replay.run_id"]
    assert (
        client.get_run(first_replay).data.tags["replayml.replay.environment"]
        == (tags["replayml.replay.environment"])
    )
    # replays are named after the run they replay
    assert client.get_run(first_replay).info.run_name == f"replay of {run_name}"

    # register names the packages and how to settle it, and does not blame the run
    refused = CliRunner().invoke(
        app, ["register", run_id, "--name", "reco-team", "--project", str(root)],
        terminal_width=2000,
    )  # fmt: skip
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert "replayed in another environment than its own" in said
    assert f"env.lightgbm {ours} -> {OTHER_LIGHTGBM}" in said
    assert f"replayml replay {run_id} --env" in said and "uv sync --frozen" in said
    assert "--force" in said and "Fix the run" not in said

    # a replay in the run's own environment replaces that verdict
    own = replay(run_id, project=root)
    assert own.verdict is Verdict.IDENTICAL
    tags = client.get_run(run_id).data.tags
    assert tags["replayml.replay.verdict"] == "IDENTICAL"
    assert tags["replayml.replay.environment"] == "same"
    assert tags["replayml.replay.run_id"] == own.replay_run_id

    # and a later replay in the stale venv no longer overwrites it
    again = _replay_cli(root, run_id, stale)
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    assert "keeps its IDENTICAL verdict" in " ".join(again.stdout.split())
    tags = client.get_run(run_id).data.tags
    assert tags["replayml.replay.verdict"] == "IDENTICAL"
    assert tags["replayml.replay.environment"] == "same"
    assert tags["replayml.replay.run_id"] == own.replay_run_id
    latest = max(
        (r for r in all_runs(root) if r.data.tags.get("replayml.replay_of") == run_id),
        key=lambda r: r.info.start_time,
    )
    assert latest.data.tags["replayml.replay.verdict"] == "DIFFERENT"
    assert "env.lightgbm" in latest.data.tags["replayml.replay.environment"]

    registered = CliRunner().invoke(
        app, ["register", run_id, "--name", "reco-team", "--project", str(root)]
    )
    assert registered.exit_code == 0, registered.output
    (version,) = client.search_model_versions("name = 'reco-team'")
    assert version.tags["replayml.replay.verdict"] == "IDENTICAL"
    assert version.tags["replayml.replay.environment"] == "same"
    assert "replayml.forced" not in version.tags


def test_replay_config_names_the_replay_only_where_the_runs_code_can() -> None:
    config, changed, _ = replay_config(
        {"tracking": {"experiment": "e", "run_name": None}}, "r1", "t", "e", run_name="a-${x}"
    )
    assert config["tracking"]["run_name"] == "replay of a-\\${x}"  # kept literal for Hydra
    assert "tracking.run_name" in changed
    # a run whose code had no tracking.run_name: its replay cannot be given one
    older, changed, _ = replay_config(
        {"tracking": {"experiment": "e"}}, "r1", "t", "e", run_name="x"
    )
    assert "run_name" not in older["tracking"] and "tracking.run_name" not in changed


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


def _cache_object(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _corrupt(path: Path) -> None:
    """Flip one byte in place, keeping size, inode and mtime (silent bit rot)."""
    stat = path.stat()
    path.chmod(0o644)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    path.chmod(stat.st_mode)


def test_a_corrupted_remote_object_gets_advice_that_repairs_it(
    code_project: Path, tmp_path: Path
) -> None:
    root = code_project
    remote = tmp_path / "remote"  # this test's own copy: it corrupts it
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        shutil.copytree(repo.config["remote"]["local"]["url"], remote)
    dvc(root, "remote", "modify", "--local", "local", "url", str(remote))
    run_id = train(root, ["model.num_boost_round=5"]).run_id
    dir_hash = mlflow_client(root).get_run(run_id).data.tags["replayml.data.dvc_hash"]
    md5 = load_manifest(root / ".dvc" / "cache" / "files" / "md5", dir_hash)["items.parquet"]
    remote_obj = remote / "files" / "md5" / md5[:2] / md5[2:]
    _corrupt(_cache_object(root, md5))
    _corrupt(remote_obj)

    with pytest.raises(DataVersionError) as info:
        replay(run_id, project=root)
    message = str(info.value)
    assert "the remote's copy is corrupted too" in message
    assert "neither replaces an object the remote has" in message
    assert str(remote_obj) in message
    assert not _cache_object(root, md5).exists()  # never pushed back from this cache

    # the advice, followed from a machine whose cache has the version intact
    found = re.search(r"`(rm -f [^`]+)`", message)
    assert found, message
    subprocess.run(found.group(1), shell=True, check=True)
    obj = _cache_object(root, md5)
    shutil.copyfile(root / "data" / "items.parquet", obj)
    assert file_md5(obj) == md5
    assert dvc(root, "push", "data.dvc").returncode == 0
    assert file_md5(remote_obj) == md5
    obj.unlink()  # the cache again lacks it: the replay must fetch the repaired copy
    again = replay(run_id, project=root)
    assert again.verdict is Verdict.IDENTICAL
