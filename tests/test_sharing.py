"""A run others cannot rebuild (its commit on no git remote, its data version not in the DVC
remote) says so when it is trained, and is not registered until both are pushed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import all_runs, dvc, git, mlflow_client, run_train_py


def _register(root: Path, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replayml", "register", run_id, "--name", "reco-team", *args],
        cwd=root, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def _review(root: Path, run_id: str) -> str:
    """The review's Markdown, run in the project like a pull request's CI job."""
    proc = subprocess.run(
        [sys.executable, "-m", "replayml", "review", run_id, "--bootstrap", "0"],
        cwd=root, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _pushed_to_origin(root: Path, origin: Path) -> str:
    """Give the project a bare `origin` and push its branch there; returns the branch."""
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(root, "remote", "add", "origin", str(origin))
    branch = git(root, "rev-parse", "--abbrev-ref", "HEAD").strip()
    git(root, "push", "-q", "origin", branch)
    return branch


def test_a_run_others_cannot_fetch_is_registered_only_once_pushed(
    project: Path, tmp_path: Path
) -> None:
    root = project
    branch = _pushed_to_origin(root, tmp_path / "origin.git")
    # a teammate's new commit, not pushed yet, and a DVC remote without the data version
    preset = root / "conf" / "experiment" / "team.yaml"
    preset.write_text("# @package _global_\nmodel:\n  num_leaves: 15\n")
    dvc(root, "remote", "add", "-d", "-f", "team", str(tmp_path / "team-remote"))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "team preset and remote")

    proc = run_train_py(root, "experiment=team", "model.num_boost_round=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(root)
    commit = run.data.tags["replayml.code.commit"]
    said = proc.stdout + proc.stderr  # (Hydra logs to the console)
    assert f"commit {commit[:12]} is on no branch of the git remote(s) origin" in said
    assert run.data.tags["replayml.code.on_remote"] == "false"

    # the review shared in the pull request says it before anyone tries
    md = _review(root, run.info.run_id)
    dvc_hash = run.data.tags["replayml.data.dvc_hash"]
    assert "- **Others cannot replay the run yet:** commit" in md
    assert f"commit {commit[:12]} is on no branch of the git remote(s) origin" in md
    assert f"has no copy of data version {dvc_hash}" in md and "dvc push data.dvc" in md
    cell = next(line for line in md.splitlines() if line.startswith("| others can replay |"))
    assert cell.startswith(f"| others can replay | no: commit {commit[:12]} is on no branch")

    refused = _register(root, run.info.run_id)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"commit {commit[:12]} is on no branch" in refused.stderr
    assert f"git push origin {branch}" in refused.stderr
    assert f"has no copy of data version {dvc_hash}" in refused.stderr
    assert "dvc push data.dvc" in refused.stderr
    client = mlflow_client(root)
    assert client.search_model_versions("name = 'reco-team'") == []

    git(root, "push", "-q", "origin", branch)
    still = _register(root, run.info.run_id)
    assert still.returncode == 2 and "is on no branch" not in still.stderr  # code: fixed
    assert dvc(root, "push").returncode == 0
    md = _review(root, run.info.run_id)
    assert "Others cannot replay" not in md
    assert "| others can replay | yes (commit on the git remote, data in the DVC remote) |" in md
    done = _register(root, run.info.run_id)
    assert done.returncode == 0, done.stderr[-3000:]
    (version,) = client.search_model_versions("name = 'reco-team'")
    assert "replayml.forced" not in version.tags


def test_a_ci_clone_of_a_pushed_pull_request_is_not_called_unpushed(
    project: Path, tmp_path: Path
) -> None:
    # CI clones shallow and checks out the pull request's commit by its SHA: no remote-tracking
    # branch contains it, yet it is on the remote (the head of the pull request's branch)
    from replayml.lineage.sharing import commit_on_remote, sharing_gaps

    root = project
    origin = tmp_path / "origin.git"
    main = _pushed_to_origin(root, origin)
    git(root, "checkout", "-q", "-b", "pr-1")
    (root / "conf" / "experiment" / "pr.yaml").write_text("# @package _global_\n{}\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a pull request")
    git(root, "push", "-q", "origin", "pr-1")
    sha = git(root, "rev-parse", "HEAD").strip()

    ci = tmp_path / "ci"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", main,
                    origin.as_uri(), str(ci)], check=True)  # fmt: skip
    git(ci, "fetch", "-q", "--depth", "1", "origin", sha)
    git(ci, "checkout", "-q", "--detach", "FETCH_HEAD")
    at_training = commit_on_remote(ci, sha)
    assert at_training.shared is None and "shallow clone" in at_training.where  # no alarm
    asked = commit_on_remote(ci, sha, ask_remote=True)
    assert asked.shared is True and asked.where == "origin refs/heads/pr-1"
    assert sharing_gaps(ci, sha, "HEAD", "", "", on_remote="false") == []
    # a commit that really is on no ref of the remote is still named
    git(ci, "commit", "-q", "--allow-empty", "-m", "local only")
    local = git(ci, "rev-parse", "HEAD").strip()
    gaps = sharing_gaps(ci, local, "HEAD", "", "", on_remote="false")
    assert len(gaps) == 1 and f"commit {local[:12]} is on no branch" in gaps[0]


def test_a_dvc_remote_inside_the_checkout_is_not_called_shared(
    project: Path, tmp_path: Path
) -> None:
    root = project
    _pushed_to_origin(root, tmp_path / "origin.git")
    dvc(root, "remote", "add", "-d", "-f", "inside", ".dvc-inside")  # a folder in the checkout
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a remote in the checkout")
    git(root, "push", "-q", "origin", "HEAD")
    assert dvc(root, "push").returncode == 0
    proc = run_train_py(root, "model.num_boost_round=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(root)
    md = _review(root, run.info.run_id)
    cell = next(line for line in md.splitlines() if line.startswith("| others can replay |"))
    assert "is a folder inside this checkout, which clones elsewhere cannot read" in cell, cell
    assert "yes (" not in cell
    done = _register(root, run.info.run_id)  # this clone can replay it: registered, with a word
    assert done.returncode == 0, done.stderr[-3000:]
    assert "others cannot replay this run's data" in done.stderr
