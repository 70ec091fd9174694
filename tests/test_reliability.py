"""Reliability catalogue items not covered elsewhere: B8, B10, B11, C7, D6, E5."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMALL_SCALE, all_runs, dvc, mlflow_client, run_train_py, train
from replayml.data.prepare import GeneratorSpec, prepare
from replayml.lineage.data import verify_all

pytestmark = pytest.mark.slow


def test_non_deterministic_run_is_tagged_not_replayable(project: Path) -> None:  # D6
    result = train(project, ["model.deterministic=false"])
    tags = mlflow_client(project).get_run(result.run_id).data.tags
    assert tags["replayml.replayable"] == "false"
    assert "model.deterministic=false" in tags["replayml.not_replayable_reasons"]


def test_failed_artifact_upload_never_leaves_a_finished_run(project: Path) -> None:  # B8
    client = mlflow_client(project)
    # an experiment whose artifact store cannot be written (a path under a regular file)
    client.create_experiment("replayml", artifact_location="file:///dev/null/artifacts")
    proc = run_train_py(project)
    assert proc.returncode != 0
    runs = all_runs(project)
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert "replayml.model_uri" not in runs[0].data.tags


def test_model_is_stored_in_lightgbm_text_format(project: Path) -> None:  # E5
    result = train(project)
    client = mlflow_client(project)
    uri = client.get_run(result.run_id).data.tags["replayml.model_uri"]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    try:
        local = Path(mlflow.artifacts.download_artifacts(uri))
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlmodel = (local / "MLmodel").read_text()
    assert "lightgbm" in mlmodel and "pickle" not in mlmodel.lower()
    text = (local / "model.lgb").read_text()
    assert text.startswith("tree") and "Tree=0" in text


def test_interrupted_pull_then_rerun_completes(project: Path, tmp_path: Path) -> None:  # B10
    from conftest import git

    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    pull = subprocess.Popen([sys.executable, "-m", "dvc", "pull", "-q"], cwd=clone)
    time.sleep(1.0)
    pull.kill()
    pull.wait()
    done = prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert "already at" in done or "from the DVC remote" in done
    verify_all(clone, "data.dvc", "data")


def test_stale_dvc_lock_does_not_block(project: Path) -> None:  # B11 (stale)
    lock = project / ".dvc" / "tmp" / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("12345\n")  # left behind by a killed process: nobody holds it
    assert dvc(project, "status", check=False).returncode == 0


def test_live_dvc_lock_fails_cleanly_naming_it(project: Path) -> None:  # B11 (live), C7
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, zc.lockfile; l = zc.lockfile.LockFile(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(project / ".dvc" / "tmp" / "lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        shutil.rmtree(project / "data")
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "replayml", "data", "prepare", "--scale", str(SMALL_SCALE)],
            cwd=project, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert time.monotonic() - start < 60
        assert proc.returncode != 0
        assert "lock" in proc.stderr.lower()
        assert not (project / "data").exists() or not any((project / "data").iterdir())
    finally:
        holder.kill()
        holder.wait()
    # once the holder is gone the same command completes
    assert prepare(project, GeneratorSpec(scale=SMALL_SCALE), push=False)
    verify_all(project, "data.dvc", "data")


@pytest.mark.parametrize("victim", ["metrics.json", "model.txt"])
def test_disk_full_while_saving_fails_and_registers_nothing(project: Path, victim: str) -> None:
    """B9: writes hit ENOSPC (the file being written is a link to /dev/full)."""
    out = project / "outputs" / "full"
    out.mkdir(parents=True)
    (out / f".{victim}.tmp").symlink_to("/dev/full")
    proc = run_train_py(project, f"output_dir={out}")
    assert proc.returncode != 0
    said = proc.stderr + proc.stdout
    assert f"cannot write {out / victim}: No space left on device" in said
    assert not (out / victim).exists()  # nothing half-written
    (run,) = all_runs(project)
    assert run.info.status == "FAILED"
    assert "replayml.model_uri" not in run.data.tags
    # the trained model is not lost: its files are kept elsewhere, and the message says where
    kept = Path(said.split("are kept in ")[1].split()[0].rstrip("."))
    assert (kept / "model.txt").is_file() and (kept / "metrics.json").is_file()
    shutil.rmtree(kept)


def test_write_failure_while_pulling_data_leaves_nothing_half_written(
    project: Path, tmp_path: Path
) -> None:  # B9 (pulling): every write beyond 2 KB fails, as on a full disk
    import resource

    from conftest import git

    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = subprocess.run(
        [sys.executable, "-m", "replayml", "data", "prepare", "--scale", str(SMALL_SCALE),
         "--no-push"],
        cwd=clone, capture_output=True, text=True, timeout=300, check=False,
        preexec_fn=small_disk,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "is the disk full?" in proc.stderr and "make data" in proc.stderr
    assert not list(clone.glob(".data.tmp-*"))  # the generator's folder is gone
    # nothing half-written was taken as valid: with room again, the same command completes
    done = prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert "from the DVC remote" in done or "already at" in done
    verify_all(clone, "data.dvc", "data")


def test_a_first_run_killed_while_creating_the_store_leaves_it_usable(tmp_path: Path) -> None:
    # MLflow's first migrations take seconds: a SIGKILL in that window used to leave a
    # half-built mlflow.db that every later command refused ("table ... already exists")
    import signal

    from replayml.config.schema import TrackingConfig
    from replayml.tracking.store import open_experiment, store_spec

    code = (
        "import sys; from pathlib import Path;"
        "from replayml.config.schema import TrackingConfig;"
        "from replayml.tracking.store import open_experiment, store_spec;"
        "open_experiment(store_spec(TrackingConfig(uri=sys.argv[1]), Path('.')))"
    )
    for delay in (0.1, 0.4, 0.8):
        store = tmp_path / f"store-{delay}"
        uri = f"sqlite:///{store / 'mlflow.db'}"
        proc = subprocess.Popen([sys.executable, "-c", code, uri], cwd=tmp_path)
        # the migrations start when the database file appears (ours or MLflow's)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if store.is_dir() and [p for p in store.iterdir() if "mlflow.db" in p.name
                                   and not p.name.endswith(".lock")]:  # fmt: skip
                break
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        client, experiment_id = open_experiment(store_spec(TrackingConfig(uri=uri), tmp_path))
        assert client.get_experiment(experiment_id).name == "replayml"
        assert (store / "mlflow.db").is_file()
        assert not list(store.glob(".mlflow.db.init-*"))


def test_a_damaged_local_store_is_named_as_a_file_not_a_server(tmp_path: Path) -> None:
    from replayml.config.schema import TrackingConfig
    from replayml.errors import TrackingError
    from replayml.tracking.store import open_experiment, store_spec

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)  # a truncated copy
    with pytest.raises(TrackingError) as info:
        open_experiment(store_spec(TrackingConfig(uri=f"sqlite:///{db}"), tmp_path))
    said = str(info.value)
    assert f"cannot use the local tracking store {db}" in said and "move it aside" in said
    assert "server" not in said


def test_a_busy_local_store_is_not_called_damaged(tmp_path: Path) -> None:
    # a store another process holds locked is not a damaged file: no advice to move it aside
    import sqlite3

    from replayml.config.schema import TrackingConfig
    from replayml.tracking.store import explain, store_spec

    spec = store_spec(TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path)
    said = str(explain(sqlite3.OperationalError("database is locked"), spec))
    assert (
        said == f"cannot use the local tracking store {tmp_path / 'mlflow.db'}: database is locked"
    )


def test_ctrl_c_while_training_says_which_run_it_marked_killed(project: Path) -> None:
    import signal

    slow = ["model.num_boost_round=100000", "model.early_stopping_rounds=100000",
            "model.learning_rate=0.001"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "train.py", *slow], cwd=project, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the progress lines go to stdout
        if "training ..." in line:
            break
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    (run,) = all_runs(project)
    assert proc.returncode == 130, err[-3000:]
    assert run.info.status == "KILLED"
    assert f"error: interrupted (Ctrl-C); run {run.info.run_id} is marked KILLED" in err
    assert "Traceback" not in err  # one line, not the interpreter's traceback
