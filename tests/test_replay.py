"""Exact replay of a run by its id, against a real git repo, DVC cache and local remote, and a
real MLflow SQLite store.

The replay trains with the code committed in the project (a copy of replayml's `src/`, made
once per session), in a subprocess; the original runs are made in-process with the same code.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import replayml
from conftest import REPO, all_runs, dvc, git, mlflow_client, run_train_py, train
from replayml.cli import app
from replayml.errors import DataVersionError, ReplaymlError, RunNotFoundError, TrackingError
from replayml.lineage.data import file_md5, load_manifest, read_dvc_file
from replayml.redact import PLACEHOLDER
from replayml.replay import (
    ReplayReport,
    Verdict,
    print_report,
    remove_abandoned_worktrees,
    replay,
    replay_config,
    secret_env_var,
)
from replayml.tracking.run import pid_space

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _project_store_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each project uses its own store: no tracking URI leaks in from an earlier run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def code_template(template_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template project with replayml's code committed in `src/` and its MLflow store
    initialised (once, so that each copy skips the store's schema migration)."""
    # import every module first, then copy right away: in-process runs and the copy then use
    # the same source even while the package is being edited elsewhere
    for mod in pkgutil.walk_packages(replayml.__path__, "replayml."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    root = tmp_path_factory.mktemp("code-template") / "proj"
    shutil.copytree(template_project, root, symlinks=True)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "replayml's code in the project")
    mlflow_client(root).search_experiments()
    return root


@pytest.fixture
def code_project(code_template: Path, tmp_path: Path) -> Path:
    """A private copy of the project with committed code."""
    root = tmp_path / "proj"
    shutil.copytree(code_template, root, symlinks=True)
    return root


@pytest.fixture(scope="module")
def trained(code_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A project with one finished default run, shared by the replays that leave it as found."""
    root = tmp_path_factory.mktemp("trained") / "proj"
    shutil.copytree(code_template, root, symlinks=True)
    return root, train(root).run_id


def _explain(report: ReplayReport) -> str:
    rows = [
        f"{d.group} {d.key}: {d.original} -> {d.replay} ({d.cause})" for d in report.differences
    ]
    return "\n".join([report.verdict, *rows, *report.warnings, *report.not_replayable])


def _worktrees(root: Path) -> list[str]:
    return [line for line in git(root, "worktree", "list").splitlines() if line.strip()]


def _snapshot(root: Path) -> dict[str, object]:
    """What a replay must never change in the user's checkout."""
    data = root / "data"
    return {
        "head": git(root, "rev-parse", "HEAD"),
        "branch": git(root, "rev-parse", "--abbrev-ref", "HEAD"),
        "status": git(root, "status", "--porcelain"),
        "data.dvc": (root / "data.dvc").read_bytes(),
        "data": {
            p.relative_to(data).as_posix(): file_md5(p) for p in data.rglob("*") if p.is_file()
        },
        "worktrees": _worktrees(root),
    }


def _cache_object(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _corrupt(path: Path) -> None:
    """Flip one byte in place, keeping size, inode and mtime: silent bit rot, which DVC's own
    checks (trusting what it has seen before) do not notice."""
    stat = path.stat()
    path.chmod(0o644)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    with path.open("r+b") as fh:
        fh.write(bytes(content))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    path.chmod(stat.st_mode)


def _items_md5(root: Path, run_id: str) -> str:
    dir_hash = mlflow_client(root).get_run(run_id).data.tags["replayml.data.dvc_hash"]
    return load_manifest(root / ".dvc" / "cache" / "files" / "md5", dir_hash)["items.parquet"]


def test_replay_right_after_the_run_is_identical_and_tags_both_runs(
    trained: tuple[Path, str],
) -> None:
    root, run_id = trained
    registered = CliRunner().invoke(
        app, ["register", run_id, "--name", "reco-replayed", "--project", str(root)]
    )
    assert registered.exit_code == 0, registered.output
    before = _snapshot(root)
    result = CliRunner().invoke(app, ["replay", run_id, "--project", str(root)])
    assert result.exit_code == 0, result.output
    assert f"replay of run {run_id}: IDENTICAL" in result.output

    client = mlflow_client(root)
    original = client.get_run(run_id).data.tags
    replay_id = original["replayml.replay.run_id"]
    assert original["replayml.replay.verdict"] == "IDENTICAL"
    assert original["replayml.replay.url"].endswith(f"/runs/{replay_id}")
    assert replay_id in result.output
    new = client.get_run(replay_id)
    assert new.info.status == "FINISHED"
    assert new.data.tags["replayml.replay_of"] == run_id
    assert new.data.tags["replayml.replay.verdict"] == "IDENTICAL"
    for key in ("code.commit", "code.dirty", "data.dvc_hash", "tree_hash", "prediction_hash"):
        assert new.data.tags[f"replayml.{key}"] == original[f"replayml.{key}"], key
    assert new.data.metrics == client.get_run(run_id).data.metrics
    assert _snapshot(root) == before  # same HEAD, status, data; the worktree is gone
    # the version registered from the run shows the verdict on its own page too
    version = client.get_model_version("reco-replayed", "1").tags
    assert version["replayml.replay.verdict"] == "IDENTICAL"
    assert version["replayml.replay.run_id"] == replay_id


def test_replay_after_new_code_and_data_commits_uses_the_runs_versions(
    code_project: Path,
) -> None:
    root = code_project
    result = train(root)
    lgbm = root / "conf" / "model" / "lgbm.yaml"
    lgbm.write_text(lgbm.read_text().replace("num_leaves: 31", "num_leaves: 7"))
    last_day = sorted((root / "data" / "events").glob("date=*/*.parquet"))[-1]
    table = pq.read_table(last_day)
    pq.write_table(table.slice(0, table.num_rows // 2), last_day)
    dvc(root, "add", "-q", "data")
    git(root, "commit", "-qam", "smaller trees; the last day trimmed")
    assert read_dvc_file(root / "data.dvc")[0] != result.data_hash
    # a worktree of the user's own on a path that is away for now (an unmounted disk)
    mine = root.parent / "my-worktree"
    git(root, "worktree", "add", "-q", "-b", "mine", str(mine))
    away = mine.rename(root.parent / "my-worktree-away")
    before = _snapshot(root)

    report = replay(result.run_id, project=root)
    assert report.verdict is Verdict.IDENTICAL, _explain(report)
    assert report.exit_code == 0
    assert not [w for w in report.warnings if w.startswith("config")], report.warnings
    assert _snapshot(root) == before
    away.rename(mine)
    assert git(mine, "rev-parse", "--abbrev-ref", "HEAD").strip() == "mine"  # still git's
    git(root, "worktree", "remove", "--force", str(mine))
    assert len(_worktrees(root)) == 1


def test_replay_of_a_dirty_run_applies_its_recorded_diff(
    code_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = code_project
    lgbm = root / "conf" / "model" / "lgbm.yaml"
    lgbm.write_text(lgbm.read_text().replace("learning_rate: 0.05", "learning_rate: 0.1"))
    (root / "conf" / "experiment" / "small_leaves.yaml").write_text(
        "# @package _global_\nmodel:\n  num_leaves: 15\n"
    )
    result = train(root, ["experiment=small_leaves"])
    run = mlflow_client(root).get_run(result.run_id)
    assert run.data.tags["replayml.code.dirty"] == "true"

    report = replay(result.run_id, project=root, keep=True)
    try:
        assert report.verdict is Verdict.IDENTICAL, _explain(report)
        # the recorded overrides recompose to the recorded config only with the diff applied
        assert not [w for w in report.warnings if w.startswith("config")], report.warnings
        assert report.worktree is not None
        assert "learning_rate: 0.1" in (report.worktree / "conf/model/lgbm.yaml").read_text()
        assert (report.worktree / "conf/experiment/small_leaves.yaml").is_file()
        new = mlflow_client(root).get_run(report.replay_run_id).data.tags
        assert new["replayml.code.dirty"] == "true"
        assert not [d for d in report.differences if d.group == "code"]
        assert "learning_rate: 0.1" in lgbm.read_text()  # the user's change is still there
        # the printed advice removes everything --keep left: worktree, config, outputs
        kept = report.worktree.parent
        assert {"worktree", "config", "hydra"} <= {p.name for p in kept.iterdir()}
        print_report(report)
        advice = capsys.readouterr().out
        assert report.cleanup_command in advice
        subprocess.run(report.cleanup_command, shell=True, cwd=tmp_path, check=True)
        assert not kept.exists()
        assert len(_worktrees(root)) == 1
    finally:
        if report.worktree and report.worktree.exists():
            git(root, "worktree", "remove", "--force", str(report.worktree))
            shutil.rmtree(report.worktree.parent)

    # the same run without its recorded diff (the artifact lost) cannot be replayed exactly
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    (artifacts / "replayml" / "code.diff").unlink()
    lost = replay(result.run_id, project=root)
    assert lost.verdict is Verdict.NOT_REPLAYABLE and lost.exit_code == 2
    assert any("code.dirty=true" in r and "code.diff" in r for r in lost.not_replayable)


def test_replay_from_a_fresh_clone_with_an_empty_cache_and_one_openmp_thread(
    trained: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two environment changes in one replay (each replay costs a full training process):
    # nothing in the clone's DVC cache, and OMP_NUM_THREADS=1 in the replay's environment
    root, run_id = trained
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    assert not (clone / ".dvc" / "cache").exists()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    report = replay(run_id, project=clone, tracking_uri=f"sqlite:///{root / 'mlruns/mlflow.db'}")
    assert report.verdict is Verdict.IDENTICAL, _explain(report)
    assert any((clone / ".dvc" / "cache" / "files" / "md5").iterdir())  # pulled from the remote
    assert not (clone / "data").exists()  # the clone's workspace is left alone
    assert len(_worktrees(clone)) == 1
    thread = [d for d in report.differences if d.key == "env.thread_env"]
    assert thread and not thread[0].outcome  # reported as context, not as a difference
    assert "OMP_NUM_THREADS" in thread[0].replay
    assert not [w for w in report.warnings if "OMP_NUM_THREADS" in w]  # said once, not twice
    tags = mlflow_client(root).get_run(report.replay_run_id).data.tags
    assert tags["replayml.env.thread_env"] == '{"OMP_NUM_THREADS": "1"}'


def test_the_recorded_diff_is_a_patch_whatever_the_users_git_config(code_project: Path) -> None:
    # an external diff tool (difftastic users), no a/ b/ prefixes, colour always on; and a
    # file with CRLF line endings: the recorded diff still applies, byte for byte
    root = code_project
    preset = root / "conf" / "experiment" / "crlf.yaml"
    preset.write_bytes(b"# @package _global_\r\nmodel:\r\n  num_leaves: 31\r\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a preset saved on Windows")
    preset.write_bytes(b"# @package _global_\r\nmodel:\r\n  num_leaves: 15\r\n")
    (root / "conf" / "experiment" / "new_crlf.yaml").write_bytes(b"# @package _global_\r\n")
    for key, value in (("diff.external", "/bin/true"), ("diff.noprefix", "true"),
                       ("color.diff", "always"), ("diff.mnemonicPrefix", "true"),
                       ("diff.context", "0")):  # fmt: skip
        git(root, "config", key, value)
    result = train(root, ["experiment=crlf", "model.num_boost_round=20"])
    tags = mlflow_client(root).get_run(result.run_id).data.tags
    assert tags["replayml.code.dirty"] == "true"
    report = replay(result.run_id, project=root, keep=True)
    try:
        assert report.verdict is Verdict.IDENTICAL, _explain(report)
        assert report.worktree is not None
        kept = report.worktree / "conf" / "experiment"
        assert (kept / "crlf.yaml").read_bytes() == preset.read_bytes()
        assert (kept / "new_crlf.yaml").read_bytes() == b"# @package _global_\r\n"
        assert not [d for d in report.differences if d.group == "code"], _explain(report)
    finally:
        if report.worktree and report.worktree.exists():
            git(root, "worktree", "remove", "--force", str(report.worktree))
            shutil.rmtree(report.worktree.parent)


@pytest.mark.parametrize(
    ("key", "other"),
    [
        ("numpy", "1.0.0"),
        ("cpu", "Intel(R) Xeon(R) Platinum 8375C; numpy SIMD X86_V2 X86_V3 X86_V4"),
    ],
)
def test_strict_env_refuses_a_different_environment_before_running(
    trained: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, key: str, other: str
) -> None:
    root, run_id = trained
    client = mlflow_client(root)
    ours = client.get_run(run_id).data.tags[f"replayml.env.{key}"]
    # a run made with another NumPy, or on a CPU with other vector instructions: --strict-env
    # refuses to replay it here
    client.set_tag(run_id, f"replayml.env.{key}", other)
    runs = len(all_runs(root))
    try:
        result = CliRunner().invoke(
            app, ["replay", run_id, "--project", str(root), "--strict-env"], terminal_width=200
        )
    finally:
        client.set_tag(run_id, f"replayml.env.{key}", ours)
    assert result.exit_code == 2, result.output  # a refusal, not a DIFFERENT model (1)
    assert "NOT_REPLAYABLE" in result.output and f"--strict-env: env.{key} is" in result.output
    assert len(all_runs(root)) == runs
    assert len(_worktrees(root)) == 1
    if key != "numpy":
        return  # what follows replays once
    # thread variables (a joblib sweep's children have some) cannot change the result: the
    # replay runs, and says so once
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = CliRunner().invoke(
        app, ["replay", run_id, "--project", str(root), "--strict-env"], terminal_width=200
    )
    assert threads.exit_code == 0, threads.output
    assert "IDENTICAL" in threads.output and threads.output.count("OMP_NUM_THREADS") == 1


def test_corrupted_cache_file_is_named_and_repaired_from_the_remote(
    trained: tuple[Path, str],
) -> None:
    root, run_id = trained
    md5 = _items_md5(root, run_id)
    obj = _cache_object(root, md5)
    _corrupt(obj)
    workspace = file_md5(root / "data" / "items.parquet")

    report = replay(run_id, project=root)
    assert report.verdict is Verdict.IDENTICAL, _explain(report)
    assert any("data/items.parquet" in w and md5 in w for w in report.warnings), report.warnings
    assert file_md5(obj) == md5  # the cache holds an intact copy again
    assert file_md5(root / "data" / "items.parquet") == workspace


def _private_remote(root: Path, tmp_path: Path) -> Path:
    """A copy of the project's DVC remote that only this test uses (it may delete from it)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        shared = Path(repo.config["remote"]["local"]["url"])
    remote = tmp_path / "remote"
    shutil.copytree(shared, remote)
    dvc(root, "remote", "modify", "--local", "local", "url", str(remote))
    return remote


def test_data_missing_from_both_cache_and_remote_is_refused(
    code_project: Path, tmp_path: Path
) -> None:
    root = code_project
    remote = _private_remote(root, tmp_path)  # this test deletes from it
    result = train(root)
    md5 = _items_md5(root, result.run_id)
    _corrupt(_cache_object(root, md5))
    (remote / "files" / "md5" / md5[:2] / md5[2:]).unlink()
    runs = len(all_runs(root))

    with pytest.raises(DataVersionError) as info:
        replay(result.run_id, project=root)
    message = str(info.value)
    assert "data/items.parquet" in message and md5 in message
    assert str(remote) in message
    commit = mlflow_client(root).get_run(result.run_id).data.tags["replayml.code.commit"]
    # the run's own data.dvc is what the push needs, whatever the checkout records now
    assert f"git checkout {commit[:12]} -- data.dvc && dvc push data.dvc" in message
    assert "`make data` at that commit regenerates it" in message
    assert len(all_runs(root)) == runs  # nothing trained, nothing logged
    assert len(_worktrees(root)) == 1


def test_replay_of_a_multirun_child(code_project: Path) -> None:
    root = code_project
    proc = run_train_py(
        root, "-m", "model.learning_rate=0.05,0.1", env={"PYTHONPATH": str(root / "src")}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    children = [r for r in all_runs(root) if "model.learning_rate" in r.data.params]
    assert len(children) == 2  # (a sweep may also record a parent run)
    child = next(r for r in children if r.data.params["model.learning_rate"] == "0.1")

    report = replay(child.info.run_id, project=root)
    assert report.verdict is Verdict.IDENTICAL, _explain(report)
    assert not [w for w in report.warnings if w.startswith("config")], report.warnings


def _cwds_under(folder_prefix: str) -> list[str]:
    """Processes (Linux /proc) whose working folder's path contains `folder_prefix`."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            target = os.readlink(cwd)
        except OSError:
            continue
        if folder_prefix in target:
            found.append(f"{cwd.parent.name}: {target}")
    return found


def _training_run(root: Path, proc: subprocess.Popen) -> str:
    """The id of the replay's run once it trains (within two minutes)."""
    deadline, training = time.monotonic() + 120, None
    while training is None and time.monotonic() < deadline and proc.poll() is None:
        running = [r for r in all_runs(root) if r.info.status == "RUNNING"]
        training = running[0].info.run_id if running else None
        time.sleep(0.1)
    assert training is not None, "the replay never started training"
    return training


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [
        # what a CI timeout does: SIGTERM to the command
        ("SIGTERM", 143, "error: received signal 15; the replay stopped"),
        # Ctrl-C in a terminal: SIGINT to the command's whole process group, trainer included
        ("SIGINT", 130, "error: interrupted; the replay stopped"),
    ],
)
def test_a_stopped_replay_stops_its_trainer_and_removes_its_worktree(
    code_project: Path, stop: str, code: int, said: str
) -> None:
    root = code_project
    # many rounds without early stopping: the replay is still training when it is stopped
    slow = ["model.num_boost_round=1000", "model.early_stopping_rounds=0"]
    original = train(root, slow).run_id
    proc = subprocess.Popen(
        [sys.executable, "-m", "replayml", "replay", original],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )  # fmt: skip
    training = _training_run(root, proc)
    if stop == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert said in err
    assert "Traceback" not in err
    assert mlflow_client(root).get_run(training).info.status == "KILLED"
    assert _worktrees(root) == _worktrees(root)[:1]  # only the project's own checkout
    commit = mlflow_client(root).get_run(original).data.tags["replayml.code.commit"]
    assert _cwds_under(f"replayml-replay-{commit[:8]}-") == []  # no trainer left behind


def test_a_killed_replay_does_not_leave_its_trainer_training(code_project: Path) -> None:
    # SIGKILL gives the replay no chance to stop its trainer: the trainer sees its caller gone
    # and marks its run KILLED instead of training on unseen
    root = code_project
    slow = ["model.num_boost_round=1000", "model.early_stopping_rounds=0"]
    original = train(root, slow).run_id
    proc = subprocess.Popen(
        [sys.executable, "-m", "replayml", "replay", original],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    training = _training_run(root, proc)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if mlflow_client(root).get_run(training).info.status != "RUNNING":
            break
        time.sleep(0.2)
    assert mlflow_client(root).get_run(training).info.status == "KILLED"
    commit = mlflow_client(root).get_run(original).data.tags["replayml.code.commit"]
    prefix = f"replayml-replay-{commit[:8]}-"
    deadline = time.monotonic() + 30
    while _cwds_under(prefix) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _cwds_under(prefix) == []  # no trainer left behind
    # the killed replay could not remove its worktree (nor its copy of the data): the next
    # replay does, and leaves the worktree of a replay that still runs alone
    abandoned = [Path(line.split()[0]) for line in _worktrees(root)[1:]]
    assert len(abandoned) == 1 and abandoned[0].parent.name.startswith(prefix)
    live = abandoned[0].parent.parent / f"{prefix}live" / "worktree"
    git(root, "worktree", "add", "--detach", "--quiet", "--lock", "--reason",
        f"replayml replay pid={os.getpid()} started={time.time():.0f} "
        f"host={socket.gethostname()} space={pid_space()}", str(live), commit)  # fmt: skip
    remove_abandoned_worktrees(root)
    assert [Path(line.split()[0]) for line in _worktrees(root)[1:]] == [live]
    assert not abandoned[0].parent.exists()
    git(root, "worktree", "remove", "-f", "-f", str(live))
    shutil.rmtree(live.parent)


def test_replay_of_a_dvc_repro_run_rebuilds_its_cached_features(code_project: Path) -> None:
    # `dvc repro`'s train stage reads the matrices the `features` stage cached in
    # artifacts/features (features_dir=...), which the replay's worktree does not have
    from replayml.config.compose import params_yaml

    root = code_project
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(params_yaml(root / "conf", []))  # the project's conf/
    dvc(root, "config", "hydra.enabled", "true")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pipeline")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # stages: `python`
    # `dvc exp run -S`: params.yaml, not conf/, has the value
    repro = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", "model.learning_rate=0.1"], cwd=root,
        capture_output=True, text=True, env={**os.environ, "PATH": path}, check=False,
        timeout=600,
    )  # fmt: skip
    assert repro.returncode == 0, repro.stderr[-3000:] + repro.stdout[-3000:]
    (run,) = all_runs(root)
    assert run.data.tags["replayml.features_cache"] == "artifacts/features"

    assert run.data.params["model.learning_rate"] == "0.1"
    report = replay(run.info.run_id, project=root)
    assert report.verdict is Verdict.IDENTICAL, _explain(report)
    # recomposed as the stage composed it (params.yaml), so no config warning
    assert not [w for w in report.warnings if w.startswith("config:")], report.warnings
    new = mlflow_client(root).get_run(report.replay_run_id).data.tags
    assert new["replayml.features_cache"] == ""  # rebuilt from the data, not read from a cache
    for split in ("train", "valid", "test"):
        key = f"replayml.slice_hash.{split}"
        assert new[key] == run.data.tags[key], key


def test_code_that_is_not_the_recorded_commit_is_different_and_says_why(
    code_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The committed code smooths rates differently, but the run imports replayml from the
    # environment (the installed package), not from the project: code.commit names a commit
    # whose code did not run. The replay runs the committed code, and the result differs.
    root = code_project
    builders = root / "src" / "replayml" / "features" / "builders.py"
    text = builders.read_text()
    patched = text.replace(
        "return (num + prior * strength) / (den + strength)",
        "return (num + prior * strength) / (den + strength + 1.0)",
    )
    assert patched != text, "features/builders.py changed: update this test's patch"
    builders.write_text(patched)
    git(root, "commit", "-qam", "smooth rates a little more")
    result = train(root)
    # the run knows: its code is not the project's, so it is not replayable (nor registrable)
    recorded = mlflow_client(root).get_run(result.run_id).data.tags
    assert recorded["replayml.replayable"] == "false"
    why = recorded["replayml.not_replayable_reasons"]
    assert (
        "differs from the project's src/replayml in 1 file(s) (e.g. features/builders.py)" in why
    )
    refused = replay(result.run_id, project=root)
    assert refused.verdict is Verdict.NOT_REPLAYABLE
    assert [r for r in refused.not_replayable if "features/builders.py" in r]

    # a run recorded before this check: the replay runs the committed code and finds out
    client = mlflow_client(root)
    client.set_tag(result.run_id, "replayml.replayable", "true")
    client.delete_tag(result.run_id, "replayml.not_replayable_reasons")
    report = replay(result.run_id, project=root)
    assert report.verdict is Verdict.DIFFERENT, _explain(report)
    assert report.exit_code == 1
    data = {d.key: d for d in report.differences if d.group == "data"}
    assert "data.dvc_hash" not in data
    assert "slice hash of train differs while the DVC hash is the same" in (
        data["slice_hash.train"].cause
    )
    assert "not the code at the recorded commit" in data["slice_hash.train"].cause
    model = {d.key for d in report.differences if d.group == "model"}
    assert {"tree_hash", "prediction_hash"} <= model
    metric = next(d for d in report.differences if d.key == "test_auc")
    assert metric.delta and metric.cause == "follows from the data difference"
    tags = mlflow_client(root).get_run(result.run_id).data.tags
    assert tags["replayml.replay.verdict"] == "DIFFERENT"

    # piped (not a terminal, 80 columns): every key, value, delta and cause is printed in full
    capsys.readouterr()
    print_report(report)
    out = capsys.readouterr().out
    for d in report.differences:
        assert d.key in out and d.original in out and d.replay in out, d
    for cause in {d.cause for d in report.differences}:
        assert cause in out, cause
    assert data["slice_hash.train"].cause in out
    assert f"delta:    {metric.delta}" in out


def test_unknown_deleted_and_foreign_runs_are_refused(trained: tuple[Path, str]) -> None:
    root, run_id = trained
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    result = CliRunner().invoke(
        app, ["replay", "0123456789abcdef", "--project", str(root)], terminal_width=300
    )
    assert result.exit_code == 2
    assert "0123456789abcdef" in result.output and uri in result.output

    client = mlflow_client(root)
    experiment = client.get_run(run_id).info.experiment_id
    foreign = client.create_run(experiment).info.run_id
    client.set_terminated(foreign)
    with pytest.raises(RunNotFoundError, match=f"{foreign} is not a replayml run"):
        replay(foreign, project=root)
    client.delete_run(run_id)
    try:
        with pytest.raises(RunNotFoundError, match=f"{run_id} is deleted"):
            replay(run_id, project=root)
    finally:
        client.restore_run(run_id)
    failed = client.create_run(experiment, tags={"replayml.schema_version": "1"}).info.run_id
    client.set_terminated(failed, "FAILED")
    with pytest.raises(ReplaymlError, match=f"{failed} .* is FAILED"):
        replay(failed, project=root)
    with pytest.raises(TrackingError) as info:
        replay(run_id, project=root, tracking_uri="http://alice:s3cr3t@127.0.0.1:9")
    assert "s3cr3t" not in str(info.value) and "127.0.0.1:9" in str(info.value)


def test_a_rewritten_commit_names_its_branch_and_how_to_get_it_back(code_project: Path) -> None:
    root = code_project
    (root / "conf" / "experiment" / "wip.yaml").write_text("# @package _global_\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "wip")
    run = train(root, ["experiment=wip", "model.num_boost_round=3"])
    commit = mlflow_client(root).get_run(run.run_id).data.tags["replayml.code.commit"]
    git(root, "commit", "-q", "--amend", "-m", "work in progress")  # the run's commit is gone
    git(root, "reflog", "expire", "--expire=now", "--all")
    git(root, "gc", "-q", "--prune=now")
    branch = git(root, "rev-parse", "--abbrev-ref", "HEAD").strip()
    with pytest.raises(ReplaymlError) as info:
        replay(run.run_id, project=root)
    said = str(info.value)
    assert f"commit {commit} of run {run.run_id} on branch {branch} is not in" in said
    assert "amend, rebase" in said
    assert f"git push origin {commit}:refs/heads/run-{commit[:8]}" in said


def test_a_project_under_a_non_ascii_path_replays(code_project: Path, tmp_path: Path) -> None:
    # DVC writes its config in ASCII: the replay's worktree reaches the project's cache through
    # a link instead of the path itself
    root = tmp_path / "équipe reco" / "projet"
    shutil.copytree(code_project, root, symlinks=True)
    run = train(root, ["model.num_boost_round=3"])
    report = replay(run.run_id, project=root)
    assert report.verdict is Verdict.IDENTICAL, _explain(report)
    assert len(_worktrees(root)) == 1


def test_a_shallow_clone_says_how_to_fetch_the_runs_commit(
    code_project: Path, tmp_path: Path
) -> None:
    root = code_project
    run = train(root, ["model.num_boost_round=3"])
    (root / "NOTES.md").write_text("a later commit\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "later")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{root}", str(shallow))
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    commit = mlflow_client(root).get_run(run.run_id).data.tags["replayml.code.commit"]
    with pytest.raises(ReplaymlError) as info:
        replay(run.run_id, project=shallow, tracking_uri=uri)
    assert "a shallow clone" in str(info.value)
    assert f"git fetch --depth 1 origin {commit}" in str(info.value)


def test_artifacts_out_of_reach_are_named_with_their_location(trained: tuple[Path, str]) -> None:
    # a team server started with --default-artifact-root file://... records each run's
    # artifacts in a folder on the machine that logged it: elsewhere that folder is missing
    root, _ = trained
    result = train(root, ["model.num_boost_round=3"])
    where = mlflow_client(root).get_run(result.run_id).info.artifact_uri
    folder = Path(where.removeprefix("file://"))
    moved = folder.with_name(folder.name + ".elsewhere")
    folder.rename(moved)
    try:
        report = replay(result.run_id, project=root)
    finally:
        moved.rename(folder)
    assert report.verdict is Verdict.NOT_REPLAYABLE and report.exit_code == 2
    (reason,) = [r for r in report.not_replayable if "config.yaml" in r]
    assert f"its artifact location {where} does not exist on this machine" in reason
    assert "--artifacts-destination" in reason


def test_a_redacted_value_the_model_needs_or_nondeterminism_is_not_replayable(
    trained: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = trained
    result = train(root, ["+tags.api_token=s3cr3t-canary", "model.deterministic=false"])
    runs = len(all_runs(root))
    report = replay(result.run_id, project=root)
    var = "REPLAYML_SECRET_TAGS_API_TOKEN"
    assert report.verdict is Verdict.NOT_REPLAYABLE and report.exit_code == 2
    assert any("model.deterministic=false" in r for r in report.not_replayable)
    # a free-form tag cannot change the model: its redacted value does not block a replay
    assert not any("tags.api_token" in r for r in report.not_replayable)
    assert len(all_runs(root)) == runs and len(_worktrees(root)) == 1
    config, changed, missing = replay_config(result.config, result.run_id, "t", "replayml")
    assert not missing and "tags.api_token" in changed
    assert config["tags"]["api_token"] == result.config["tags"]["api_token"] != "s3cr3t-canary"
    tagged = train(root, ["+tags.api_token=s3cr3t-canary", "model.num_boost_round=5"])
    again = replay(tagged.run_id, project=root)
    assert again.verdict is Verdict.IDENTICAL, _explain(again)
    # nor does a tracking setting from the environment (a UI address)
    shown = {**result.config, "tracking": {**result.config["tracking"], "ui_url": PLACEHOLDER}}
    _, changed, missing = replay_config(shown, result.run_id, "t", "replayml")
    assert not missing and "tracking.ui_url" in changed
    # a redacted value the model depends on (an env-interpolated data path) does block it
    recorded = {**result.config, "data": {**result.config["data"], "root": PLACEHOLDER}}
    _, _, missing = replay_config(recorded, result.run_id, "t", "replayml")
    assert missing == [
        "data.root was redacted in the run's record; set the secret in the environment as "
        "REPLAYML_SECRET_DATA_ROOT to replay it"
    ]

    # with the variable set, the replay config reads it from the environment, never inline
    from omegaconf import OmegaConf

    monkeypatch.setenv(var, "s3cr3t-canary")
    config, changed, missing = replay_config(result.config, result.run_id, "t", "replayml")
    assert secret_env_var("tags.api_token") == var and not missing
    assert config["tags"]["api_token"] == "${oc.env:" + var + "}"
    resolved = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    assert isinstance(resolved, dict)
    assert resolved["tags"] == {
        "api_token": "s3cr3t-canary",
        "replayml.replay_of": result.run_id,
        "replayml.replay_attempt": "t",
    }
    assert "tags.replayml.replay_of" in changed


def test_replay_config_keeps_recorded_values_literal() -> None:
    recorded: dict[str, Any] = {
        "data": {"name": "a${b}"},
        "tracking": {"uri": "sqlite:///x", "experiment": "e"},
        "output_dir": "/runs/a",
        "features_dir": "artifacts/features",
    }
    config, changed, missing = replay_config(recorded, "r", "t", "e")
    assert config["data"]["name"] == "a\\${b}"
    assert config["tracking"]["uri"] is None and "tracking.uri" in changed
    assert config["output_dir"] is None and "output_dir" in changed  # never the run's outputs
    assert config["features_dir"] is None and "features_dir" in changed  # rebuilt from the data
    assert not missing
    assert recorded["tracking"]["uri"] == "sqlite:///x"  # the input is not mutated


@pytest.mark.slow
def test_replay_inside_the_runs_locked_environment(code_project: Path) -> None:
    from replayml.replay import replay

    root = code_project
    run_id = train(root).run_id
    report = replay(run_id, project=root, locked_env=True, keep=True)
    assert report.worktree is not None
    kept = report.worktree.parent
    try:
        assert report.verdict.value == "IDENTICAL", _explain(report)
        venv_python = kept / "venv" / "bin" / "python"
        assert venv_python.is_file()  # the replay ran in a venv built from the run's uv.lock
    finally:  # --keep leaves the folder (a whole venv) for the user: remove it here
        shutil.rmtree(kept, ignore_errors=True)
        subprocess.run(
            ["git", "worktree", "remove", "-f", "-f", str(kept / "worktree")],
            cwd=root,
            check=False,
        )
    client = mlflow_client(root)
    new = client.get_run(report.replay_run_id).data.tags
    assert (
        new["replayml.env.lock_hash"] == client.get_run(run_id).data.tags["replayml.env.lock_hash"]
    )


def test_a_model_value_from_the_environment_is_checked_not_trusted(
    code_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a value read from ${oc.env:...} is recorded redacted; the replay reads it from the
    # environment again, and a wrong one is refused instead of showing up as "different trees"
    root = code_project
    proc = run_train_py(
        root, "model.learning_rate=${oc.env:LR}", "model.num_boost_round=15", env={"LR": "0.1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model.learning_rate decides the model but is recorded redacted" in proc.stdout
    (run,) = all_runs(root)
    tags = run.data.tags
    assert run.data.params["model.learning_rate"] == PLACEHOLDER
    assert "0.1" not in tags["replayml.redacted_hash.model.learning_rate"].split(":")
    var = secret_env_var("model.learning_rate")
    monkeypatch.setenv(var, "0.2")
    wrong = replay(run.info.run_id, project=root)
    assert wrong.verdict is Verdict.NOT_REPLAYABLE and wrong.exit_code == 2
    assert any(
        f"{var} is not the value model.learning_rate had" in r for r in wrong.not_replayable
    )
    assert len(all_runs(root)) == 1  # nothing trained
    monkeypatch.setenv(var, "0.10")  # the same number, written otherwise
    right = replay(run.info.run_id, project=root)
    assert right.verdict is Verdict.IDENTICAL, _explain(right)


def test_data_only_in_a_dirty_runs_diff_gets_advice_that_pushes_that_version(
    code_project: Path, tmp_path: Path
) -> None:
    # the run's data.dvc was never committed: checking it out from the run's commit would
    # push another version; the advice must point at the one in the run's diff
    root = code_project
    _private_remote(root, tmp_path)  # nothing of this version may reach the shared one
    users = root / "data" / "users.parquet"
    table = pq.read_table(users)
    pq.write_table(table.slice(0, table.num_rows - 1), users)  # an edit of the user's
    dvc(root, "add", "-q", "data")  # data.dvc left uncommitted
    result = train(root, ["model.num_boost_round=5"])
    git(root, "checkout", "--", "data.dvc")
    dvc(root, "checkout", "-q", "--force")
    dvc(root, "gc", "-w", "-f", "-q")  # the edited version leaves the cache
    with pytest.raises(DataVersionError) as info:
        replay(result.run_id, project=root)
    message = str(info.value)
    assert result.data_hash in message
    assert "which was never committed (it is in the run's recorded diff" in message
    assert f"replayml replay {result.run_id} --keep" in message
    assert "git checkout" not in message and "make data" not in message
