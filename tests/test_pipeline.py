"""End-to-end training runs against a real git repo, DVC cache and MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, all_runs, git, mlflow_client, run_train_py, train
from replayml.lineage.data import read_dvc_file
from replayml.lineage.environment import file_sha256

pytestmark = pytest.mark.slow


def _only_run(root: Path):  # noqa: ANN202
    runs = all_runs(root)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_a_run_records_its_full_lineage(project: Path) -> None:
    result = train(project)
    client = mlflow_client(project)
    run = client.get_run(result.run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["replayml.data.dvc_hash"] == read_dvc_file(project / "data.dvc")[0]
    assert tags["replayml.code.commit"] == git(project, "rev-parse", "HEAD").strip()
    assert tags["replayml.code.dirty"] == "false"
    assert tags["replayml.env.lock_hash"] == file_sha256(project / "uv.lock")
    for key in ("lightgbm", "pandas", "numpy", "python", "platform", "num_threads"):
        assert tags[f"replayml.env.{key}"]
    assert "; numpy SIMD " in tags["replayml.env.cpu"]  # the model, and the vector levels used
    for split in ("train", "valid", "test"):
        assert len(tags[f"replayml.slice_hash.{split}"]) == 64
        assert int(tags[f"replayml.rows.{split}"]) > 0
    assert tags["replayml.dates.test_end"] == "2024-04-29"
    assert tags["replayml.dates.train_start"] == "2024-04-14"
    assert tags["replayml.seed.model"] == "42"
    assert tags["replayml.replayable"] == "true"
    assert tags["replayml.tree_hash"] == result.tree_hash
    assert tags["replayml.prediction_hash"] == result.prediction_hash
    # params: the resolved config, with absolute dates
    assert run.data.params["dates.mode"] == "absolute"
    assert run.data.params["model.learning_rate"] == "0.05"
    # metrics: model and baseline side by side, curves per iteration (batched)
    m = run.data.metrics
    for name in ("test_auc", "test_avg_precision", "test_logloss", "test_ndcg_at_10",
                 "test_recall_at_10", "baseline_auc", "baseline_ndcg_at_10"):  # fmt: skip
        assert name in m
    curve = client.get_metric_history(result.run_id, "valid_logloss")
    assert len(curve) >= int(tags["replayml.best_iteration"])
    # artifacts: resolved config, overrides, lineage, plots, scored sample, model
    arts = {a.path for a in client.list_artifacts(result.run_id, "replayml")}
    assert {"replayml/config.yaml", "replayml/overrides.yaml", "replayml/lineage.json",
            "replayml/scored_sample.csv"} <= arts  # fmt: skip
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/feature_importance.png", "plots/pr_curve.png",
            "plots/learning_curves.png"} <= plots  # fmt: skip
    cfg = yaml.safe_load(
        Path(client.download_artifacts(result.run_id, "replayml/config.yaml")).read_text()
    )
    assert cfg["dates"]["train_start"] == "2024-04-14"
    # the UI shows who ran it and opens the experiment as model training
    assert tags["mlflow.user"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # the dataset input carries our digest
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == tags["replayml.slice_hash.train"][:36]
    # the model loads with MLflow's flavour and scores like the run did
    import mlflow.lightgbm

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    try:
        booster = mlflow.lightgbm.load_model(tags["replayml.model_uri"])
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert booster.num_trees() >= 1


def test_same_command_twice_gives_identical_results(project: Path) -> None:  # D1
    a = run_train_py(project, "tracking.run_name=a")
    b = run_train_py(project, "tracking.run_name=b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    assert "run: http://127.0.0.1:5000/#/experiments/" in a.stdout
    assert "WARNING" not in a.stderr, a.stderr  # a clean run prints no library warnings
    runs = {r.data.tags["mlflow.runName"]: r for r in all_runs(project)}
    ta, tb = runs["a"].data.tags, runs["b"].data.tags
    for key in ("tree_hash", "prediction_hash", "slice_hash.train", "slice_hash.test",
                "config_hash"):  # fmt: skip
        assert ta[f"replayml.{key}"] == tb[f"replayml.{key}"], key
    assert runs["a"].data.metrics == runs["b"].data.metrics


def test_thread_counts_do_not_change_trees_or_early_stopping(project: Path) -> None:  # D2, D3
    results = [train(project, [f"model.num_threads={n}"]) for n in (1, 2, 4)]
    assert len({r.tree_hash for r in results}) == 1
    assert len({r.prediction_hash for r in results}) == 1
    assert len({r.metrics["best_iteration"] for r in results}) == 1


def test_ranker_and_popularity_models(project: Path) -> None:
    ranker = train(project, ["model=lgbm_ranker"])
    assert "test_ndcg_at_10" in ranker.metrics and "test_logloss" not in ranker.metrics
    pop = train(project, ["model=popularity"])
    assert pop.metrics["test_auc"] == pop.metrics["baseline_auc"]
    assert pop.tree_hash == "none"


def test_model_beats_the_popularity_baseline(project: Path) -> None:
    result = train(project)
    assert result.metrics["test_auc"] > result.metrics["baseline_auc"] + 0.03


def test_dirty_tree_is_recorded_with_its_diff(project: Path) -> None:
    conf = project / "conf" / "model" / "lgbm.yaml"
    conf.write_text(conf.read_text().replace("num_leaves: 31", "num_leaves: 15"))
    (project / "notes.txt").write_text("an untracked file\n")
    result = train(project)
    client = mlflow_client(project)
    tags = client.get_run(result.run_id).data.tags
    assert tags["replayml.code.dirty"] == "true"
    diff = Path(client.download_artifacts(result.run_id, "replayml/code.diff")).read_text()
    assert "+num_leaves: 15" in diff and "an untracked file" in diff


def test_a_log_the_shell_writes_into_the_checkout_is_not_code(project: Path) -> None:
    from replayml.lineage.code import code_version

    # `python train.py -m ... > sweep.log`: the log grows while the runs record their code
    (project / "sweep.log").write_text("sweep 2026-11-29_10-00-00: ...\n")
    (project / "logs").mkdir()
    (project / "logs" / "nightly.log").write_text("trained 31 iterations\n")
    (project / "nohup.out").write_text("sweep ...\n")
    (project / "run.out").write_text("run: http://127.0.0.1:5000/...\n")  # `> run.out`
    assert code_version(project).dirty is False
    (project / "notes.txt").write_text("not a log\n")  # any other untracked file still counts
    assert [path for path, _ in code_version(project).untracked] == ["notes.txt"]


def test_failure_inside_the_run_is_failed_with_traceback(project: Path) -> None:  # B1
    out = project / "outputs" / "broken"
    out.mkdir(parents=True)
    (out / "plots").write_text("a file where the plots folder should go")
    proc = run_train_py(project, f"output_dir={out}")
    assert proc.returncode != 0
    run = _only_run(project)
    assert run.info.status == "FAILED"
    client = mlflow_client(project)
    trace = Path(client.download_artifacts(run.info.run_id, "traceback.txt")).read_text()
    assert "FileExistsError" in trace or "NotADirectoryError" in trace
    assert "replayml.error" in run.data.tags


def test_exit_inside_a_run_is_never_finished(project: Path) -> None:  # B2
    from replayml.config.schema import TrackingConfig
    from replayml.tracking.run import tracked_run
    from replayml.tracking.store import store_spec

    spec = store_spec(TrackingConfig(), project)
    with pytest.raises(SystemExit), tracked_run(spec, "exits", {}) as run:
        sys.exit(1)
    assert mlflow_client(project).get_run(run.run_id).info.status == "FAILED"


def test_long_config_values_are_kept_not_truncated(project: Path) -> None:  # A11
    long_name = "x" * 7000
    result = train(project, [f"data.name={long_name}"])
    client = mlflow_client(project)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert "data.name" not in run.data.params
    assert "data.name" in run.data.tags["replayml.params_skipped"]
    cfg = yaml.safe_load(
        Path(client.download_artifacts(result.run_id, "replayml/config.yaml")).read_text()
    )
    assert cfg["data"]["name"] == long_name


def test_train_py_started_from_a_subfolder_runs_in_the_project(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "../train.py", "features=minimal", "preprocessing=none", "dates=last_7d"],
        cwd=project / "conf", capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = all_runs(project)  # the project's own store
    assert run.info.status == "FINISHED"
    assert not (project / "conf" / "mlruns").exists()
    assert not (project / "conf" / "outputs").exists()


def test_unreachable_server_fails_fast_before_training(project: Path) -> None:  # B5
    start = time.monotonic()
    proc = run_train_py(project, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    assert "http://127.0.0.1:9" in proc.stderr
    assert "connection refused: no server listens at that address" in proc.stderr
    assert "make ui" not in proc.stderr  # a team server is not the project's local UI
    assert elapsed < 30
    assert "training ..." not in proc.stdout + proc.stderr


def test_sigterm_marks_the_run_killed(project: Path) -> None:  # B3
    proc = subprocess.Popen(
        [sys.executable, "train.py", "model.num_boost_round=100000",
         "model.early_stopping_rounds=100000", "model.learning_rate=0.001",
         "model.min_data_in_leaf=5"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "training ..." in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    rest = proc.communicate(timeout=30)[0]
    assert time.monotonic() - start < 15
    assert proc.returncode == 143
    run = _only_run(project)
    assert f"error: received signal 15; run {run.info.run_id} is marked KILLED" in rest
    assert "Traceback" not in rest
    assert run.info.status == "KILLED"
    # the job's log file says why it ended
    (log_file,) = (project / "outputs").rglob("train.log")
    assert "received signal 15" in log_file.read_text()


def test_sigterm_before_the_run_exists_says_so(project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "train.py"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the data is read; the run is created after the features
        if "loading data:" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, rest
    assert "error: received signal 15; no run was created" in rest, rest
    assert "Traceback" not in rest
    assert all_runs(project) == []


def test_lineage_json_matches_the_run(project: Path) -> None:
    result = train(project)
    lineage = json.loads((result.output_dir / "lineage.json").read_text())
    assert lineage["tree_hash"] == result.tree_hash
    assert lineage["files_read"] and all(f.endswith(".parquet") for f in lineage["files_read"])


def test_an_in_process_run_leaks_no_tracking_uri(project: Path) -> None:
    import os

    train(project)
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_sigkill_leaves_running_and_doctor_marks_it_killed(project: Path) -> None:  # B4
    proc = subprocess.Popen(
        [sys.executable, "train.py", "model.num_boost_round=100000",
         "model.early_stopping_rounds=100000", "model.learning_rate=0.001"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "training ..." in line:
            break
    proc.kill()
    proc.wait(timeout=30)
    assert _only_run(project).info.status == "RUNNING"  # what MLflow alone leaves behind

    def doctor(*args: str, cwd: Path = project) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "replayml", "doctor", *args], cwd=cwd,
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    listed = doctor(cwd=project / "conf")  # like git, from any folder of the project
    assert listed.returncode == 0 and f"process {proc.pid}" in listed.stdout, listed.stderr
    assert not (project / "conf" / "mlruns").exists()
    assert _only_run(project).info.status == "RUNNING"  # listing changes nothing
    assert doctor("--check").returncode == 1  # a CI step fails while a ghost is left
    fixed = doctor("--fix")
    assert fixed.returncode == 0
    run = _only_run(project)
    assert run.info.status == "KILLED"
    assert "process" in run.data.tags["replayml.doctor"]
    assert doctor("--check").returncode == 0


def test_doctor_leaves_live_runs_alone(project: Path) -> None:
    from replayml.config.schema import TrackingConfig
    from replayml.tracking.doctor import find_ghosts
    from replayml.tracking.run import pid_space, tracked_run
    from replayml.tracking.store import store_spec

    spec = store_spec(TrackingConfig(), project)
    with tracked_run(spec, "alive", {}) as run:
        assert run.run_id not in {g.run_id for g in find_ghosts(spec, stale_after=600)}
        # another container or CI runner with the same host name: its pid means nothing here,
        # so a fresh heartbeat keeps the run alive and an old one does not
        gone = subprocess.Popen(["true"])
        gone.wait()
        run.set_tags({"replayml.pid": str(gone.pid), "replayml.pid_space": "another-boot/pid:[1]"})
        assert run.run_id not in {g.run_id for g in find_ghosts(spec, stale_after=600)}
        (ghost,) = [g for g in find_ghosts(spec, stale_after=0) if g.run_id == run.run_id]
        assert "no heartbeat" in ghost.reason
        # the same boot and namespace: the pid decides
        run.set_tags({"replayml.pid_space": pid_space()})
        (ghost,) = [g for g in find_ghosts(spec, stale_after=600) if g.run_id == run.run_id]
        assert f"process {gone.pid}" in ghost.reason
        # a live process that started after the run did has only reused the run's pid
        time.sleep(1.5)
        later = subprocess.Popen(["sleep", "30"])
        try:
            run.set_tags({"replayml.pid": str(later.pid)})
            (ghost,) = [g for g in find_ghosts(spec, stale_after=600) if g.run_id == run.run_id]
            assert f"process {later.pid}" in ghost.reason
            run.set_tags({"replayml.pid": str(os.getpid())})  # this process: the run's own
            assert run.run_id not in {g.run_id for g in find_ghosts(spec, stale_after=600)}
        finally:
            later.kill()
            later.wait()


def test_jobs_differing_only_in_the_model_reuse_the_matrices_exactly(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sweep's jobs in one process share the matrices when only the model changes; the
    results equal a fresh build, other windows are built anew and altered matrices rebuilt."""
    import logging

    from replayml import pipeline
    from replayml.errors import ConfigError

    a = train(project, ["model.learning_rate=0.1"])
    with caplog.at_level(logging.INFO, logger="replayml.pipeline"):
        b = train(project, ["model.learning_rate=0.05"])
    assert "reusing the feature matrices" in caplog.text
    assert b.slice_hashes == a.slice_hashes and b.tree_hash != a.tree_hash
    pipeline._prepared.clear()
    fresh = train(project, ["model.learning_rate=0.05"])
    assert (fresh.tree_hash, fresh.prediction_hash) == (b.tree_hash, b.prediction_hash)
    assert fresh.metrics == b.metrics

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="replayml.pipeline"):
        c = train(project, ["dates=last_7d"])
    assert "reusing" not in caplog.text
    assert c.slice_hashes["train"] != a.slice_hashes["train"]

    kept = next(iter(pipeline._prepared.values()))
    kept.train.X.iloc[0, 0] += 1.0  # something altered the kept matrix in memory
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="replayml.pipeline"):
        d = train(project, ["dates=last_7d", "model.learning_rate=0.1"])
    assert "changed since it was built" in caplog.text and "reusing" not in caplog.text
    assert d.slice_hashes == c.slice_hashes

    # a job that builds other matrices lets the kept set go first, also when it fails
    assert pipeline._prepared
    with pytest.raises(ConfigError):
        train(project, ["preprocessing.min_item_support=100000000"])
    assert pipeline._prepared == {}


def test_training_windows_of_any_length_are_scored_on_the_same_test_rows(project: Path) -> None:
    # bots are judged on a fixed number of days before the training window's end, so a
    # longer window (which reads more history) does not change who is dropped from the test
    tags = [
        train(project, ["model=popularity", f"dates={d}"]).run_id for d in ("last_7d", "last_28d")
    ]
    client = mlflow_client(project)
    seven, twenty_eight = (client.get_run(r).data.tags for r in tags)
    assert seven["replayml.rows.train"] != twenty_eight["replayml.rows.train"]
    for key in ("replayml.rows.test", "replayml.slice_hash.test", "replayml.dates.test_start"):
        assert seven[key] == twenty_eight[key], key


def test_a_lookback_before_the_data_starts_is_said(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="replayml.pipeline"):
        train(project, ["model=popularity", "dates=last_7d"])
    assert "look back to" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="replayml.pipeline"):
        train(project, ["model=popularity", "dates=last_7d", "features.lookback_days=[7,400]"])
    assert "features.lookback_days=[7, 400] look back to" in caplog.text
    assert "the first 7 training days see less history" in caplog.text


def test_an_edit_while_the_run_trains_makes_it_not_replayable(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the run records the code as it started; an editor saving a Python file (or a `git
    # stash`) before it ends means the record may not be the code that ran. Other files (a
    # README, a config the run has read already, a commit of what is there) do not count.
    import replayml.model.fit as fit_module

    real_fit = fit_module.fit
    edits: list[Path] = []

    def fit_while_editing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for path in edits:
            path.write_text(path.read_text() + "\n# saved by an editor meanwhile\n")
        if len(edits) == 2:  # and a commit of the edited files meanwhile
            git(project, "commit", "-qam", "work in progress")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fit_module, "fit", fit_while_editing)
    edits[:] = [project / "conf" / "config.yaml", project / "README.md"]
    (project / "README.md").write_text("notes\n")
    git(project, "add", "README.md")
    git(project, "commit", "-qm", "notes")
    harmless = train(project, ["model.num_boost_round=20"])
    assert harmless.replayable, (
        mlflow_client(project)
        .get_run(harmless.run_id)
        .data.tags.get("replayml.not_replayable_reasons")
    )
    edits[:] = [project / "train.py"]
    result = train(project, ["model.num_boost_round=20"])
    tags = mlflow_client(project).get_run(result.run_id).data.tags
    assert not result.replayable
    assert tags["replayml.replayable"] == "false"
    reasons = tags["replayml.not_replayable_reasons"]
    assert "Python files of the checkout changed while the run trained (train.py)" in reasons
    assert "; " not in reasons  # one reason: the tag joins reasons with "; "
    assert tags["replayml.code.dirty"] == "false"  # the code as the run started
    lineage = json.loads((result.output_dir / "lineage.json").read_text())
    assert lineage["tags"]["replayml.replayable"] == "false"


def test_the_logged_models_signature_requires_every_feature_in_order(project: Path) -> None:
    # inferred from a few rows, a column that is missing in all of them (days since a
    # contact that never happened) would be "optional", and leaving it out crashes LightGBM
    # a one-day lookback: most users have not contacted anyone the day before
    result = train(project, ["model.num_boost_round=10", "features.lookback_days=[1]"])
    client = mlflow_client(project)
    model_uri = client.get_run(result.run_id).data.tags["replayml.model_uri"]
    logged = client.get_logged_model(model_uri.removeprefix("models:/"))
    mlmodel = yaml.safe_load(
        (Path(logged.artifact_location.removeprefix("file://")) / "MLmodel").read_text()
    )
    inputs = json.loads(mlmodel["signature"]["inputs"])
    lineage = json.loads((result.output_dir / "lineage.json").read_text())
    assert [c["name"] for c in inputs] == lineage["feature_names"]
    assert all(c.get("required", True) for c in inputs), [
        c["name"] for c in inputs if not c.get("required", True)
    ]


def test_data_left_untracked_in_the_checkout_is_said_when_it_becomes_code(project: Path) -> None:
    exports = project / "exports"  # (raw/ is ignored by the project's .gitignore)
    exports.mkdir()
    (exports / "events.csv").write_text("user,item,ts\n" + "1,2,2024-01-01\n" * 100_000)
    proc = run_train_py(project, "model.num_boost_round=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "1 untracked file(s) of 1.5 MB in all (e.g. exports/events.csv (1.5 MB))" in said
    assert "add them to .gitignore" in said


def test_a_module_git_ignores_makes_the_run_not_replayable(project: Path) -> None:
    # the project runs its own src/; a module it imports sits where git does not look
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "code")
    tweak = project / "src" / "replayml" / "features" / "local_tweak.py"
    tweak.write_text("FACTOR = 1.0\n")
    with (project / ".git" / "info" / "exclude").open("a") as f:
        f.write("local_tweak.py\n")
    builders = project / "src" / "replayml" / "features" / "builders.py"
    builders.write_text(builders.read_text() + "\nfrom replayml.features import local_tweak\n")
    proc = run_train_py(project, "model.num_boost_round=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    assert run.data.tags["replayml.replayable"] == "false"
    reasons = run.data.tags["replayml.not_replayable_reasons"]
    assert (
        "src/replayml/features/local_tweak.py was imported by this run but is ignored" in reasons
    )


def test_a_test_day_cut_short_is_said(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    import pyarrow.parquet as pq

    from conftest import dvc

    last = sorted((project / "data" / "events").glob("date=*"))[-1]
    for part in last.glob("*.parquet"):  # a dump cut off during its last day
        table = pq.read_table(part)
        pq.write_table(table.slice(0, int(table.num_rows * 0.3)), part)
    dvc(project, "add", "-q", "data")
    git(project, "commit", "-qam", "a dump cut off during its last day")
    with caplog.at_level("WARNING"):
        train(project, ["model.num_boost_round=5"])
    said = [r.getMessage() for r in caplog.records if "rows a day against" in r.getMessage()]
    day = last.name.removeprefix("date=")
    assert said and f"the test window {day}..{day} has" in said[0], caplog.text[-2000:]
    assert "set dates.anchor=" in said[0]
    before = str(date.fromisoformat(day) - timedelta(days=1))
    assert f"set dates.anchor={before}" in said[0]
    caplog.clear()
    with caplog.at_level("WARNING"):  # the advice taken: whole days only, nothing to say
        train(project, ["model.num_boost_round=5", f"dates.anchor={before}"])
    assert "rows a day against" not in caplog.text


def test_a_validation_day_holding_only_a_few_hours_is_said(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the validation day's own events are missing; a few late hours are all it holds (what a
    # zone-aware neighbour partition spills into a missing UTC day)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from conftest import dvc

    valid = sorted((project / "data" / "events").glob("date=*"))[-2]
    day = valid.name.removeprefix("date=")
    for part in valid.glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.filter(pc.greater_equal(pc.hour(table["ts"]), 21)), part)
    dvc(project, "add", "-q", "data")
    git(project, "commit", "-qam", "a validation day of three hours")
    with caplog.at_level("WARNING"):
        train(project, ["model.num_boost_round=5"])
    said = [r.getMessage() for r in caplog.records if "only part of a day" in r.getMessage()]
    assert len(said) == 1, caplog.text[-3000:]
    assert f"the validation window's day {day} has" in said[0]
    assert "all between 21:" in said[0] and "Early stopping rests on those hours" in said[0]


def test_a_quiet_validation_day_spread_over_the_day_is_not_said(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pyarrow.parquet as pq

    from conftest import dvc

    valid = sorted((project / "data" / "events").glob("date=*"))[-2]
    for part in valid.glob("*.parquet"):  # a holiday: an eighth of the rows, all day long
        table = pq.read_table(part)
        pq.write_table(table.take(list(range(0, table.num_rows, 8))), part)
    dvc(project, "add", "-q", "data")
    git(project, "commit", "-qam", "a quiet validation day")
    with caplog.at_level("WARNING"):
        train(project, ["model.num_boost_round=5"])
    assert "only part of a day" not in caplog.text


def test_the_popularity_baseline_has_a_log_loss_like_the_classifier(project: Path) -> None:
    # its scores are smoothed contact rates: probabilities, comparable with the classifier's
    pop = train(project, ["model=popularity"])
    assert pop.metrics["test_logloss"] == pop.metrics["baseline_logloss"] > 0
    lgbm = train(project, ["model.num_boost_round=10"])
    assert lgbm.metrics["baseline_logloss"] == pop.metrics["baseline_logloss"]
    assert {"valid_best_ndcg_at_10", "valid_best_recall_at_10"} <= set(lgbm.metrics)


def test_negative_sampling_says_the_probabilities_are_not_calibrated(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        sampled = train(project, ["model.num_boost_round=20", "preprocessing.negative_rate=0.2"])
    assert "preprocessing.negative_rate=0.2 keeps that share" in caplog.text
    assert "about 5x too high" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        full = train(project, ["model.num_boost_round=20"])
    assert "negative_rate" not in caplog.text
    # what the warning is about: the same test rows, a worse log loss from inflated scores
    assert sampled.metrics["test_logloss"] > full.metrics["test_logloss"]


def test_an_empty_tracking_uri_is_said_not_silently_local(project: Path) -> None:
    # a CI secret that was never set: the run lands in a local store the job throws away
    proc = run_train_py(project, "model.num_boost_round=5", env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert said.count("MLFLOW_TRACKING_URI is set but empty") == 1


def test_a_runs_own_store_and_output_folder_in_the_checkout_are_not_its_code(
    project: Path,
) -> None:
    # a store and an output folder no .gitignore covers: what runs write there is not code
    for _ in range(2):
        proc = run_train_py(
            project, "model.num_boost_round=5", "tracking.store_dir=store",
            "hydra.run.dir=runs/first",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "untracked file(s)" not in proc.stdout + proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'store' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["replayml.code.dirty"] == "false"
        assert run.data.tags["replayml.replayable"] == "true", run.data.tags.get(
            "replayml.not_replayable_reasons"
        )


def test_a_quiet_last_day_that_runs_to_the_evening_is_not_called_cut_off(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a weekend or a holiday: few rows, but spread over the whole day
    import pyarrow.parquet as pq

    from conftest import dvc

    last = sorted((project / "data" / "events").glob("date=*"))[-1]
    for part in last.glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.take(list(range(0, table.num_rows, 4))), part)
    dvc(project, "add", "-q", "data")
    git(project, "commit", "-qam", "a quiet last day")
    with caplog.at_level("WARNING"):
        train(project, ["model.num_boost_round=5"])
    assert "rows a day against" not in caplog.text


def _business_hours_day(day: pd.Timestamp, weekend_rows: int = 300) -> pd.DataFrame:
    """A day of B2B traffic: weekdays 1000 rows 06:00-21:00, weekends fewer, 08:00-18:00."""
    weekend = day.dayofweek >= 5
    rows, start, hours = (weekend_rows, 8, 10) if weekend else (1000, 6, 15)
    ts = (
        day
        + pd.Timedelta(hours=start)
        + pd.to_timedelta(np.linspace(0, hours * 3600 - 1, rows), unit="s")
    )
    return pd.DataFrame({"day": day, "ts": ts})


def test_a_quiet_weekend_of_business_hours_data_is_not_called_part_of_a_day(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from replayml.config.resolve import DateWindows, Window
    from replayml.pipeline import warn_partial_days

    days = pd.date_range("2024-03-04", periods=28, freq="D")  # Monday 4 March onwards
    train = pd.concat([_business_hours_day(d) for d in days[:26]], ignore_index=True)
    saturday, sunday = days[26], days[27]  # the validation and test days
    assert (saturday.dayofweek, sunday.dayofweek) == (5, 6)
    windows = DateWindows(
        Window(days[0].date(), days[25].date()),
        Window(saturday.date(), saturday.date()),
        Window(sunday.date(), sunday.date()),
    )
    parts = [train, _business_hours_day(saturday), _business_hours_day(sunday)]
    with caplog.at_level("WARNING"):
        warn_partial_days(windows, parts)
    assert "only part of a day" not in caplog.text
    # a Saturday holding only two late hours of 40 rows is one
    sliver = _business_hours_day(saturday, 40).assign(
        ts=lambda f: saturday + pd.Timedelta(hours=22) + (f["ts"] - f["ts"].min()) / 6
    )
    with caplog.at_level("WARNING"):
        warn_partial_days(windows, [train, sliver, parts[2]])
    assert "validation window's day 2024-03-30 has 40 rows against 300 on a typical" in caplog.text


def test_a_thin_whole_day_and_a_training_gap_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A test day missing half its rows all through the day (one of two export shards), and
    a day missing inside the training window, are said, not trained and scored silently."""
    from replayml.config.resolve import DateWindows, Window
    from replayml.pipeline import warn_partial_days

    def whole_day(day: pd.Timestamp, rows: int = 600) -> pd.DataFrame:
        ts = day + pd.to_timedelta(np.linspace(0, 86_399, rows), unit="s")
        return pd.DataFrame({"day": day, "ts": ts})

    days = pd.date_range("2024-03-04", periods=28, freq="D")
    train = pd.concat([whole_day(d) for d in days[:26]], ignore_index=True)
    windows = DateWindows(
        Window(days[0].date(), days[25].date()),
        Window(days[26].date(), days[26].date()),
        Window(days[27].date(), days[27].date()),
    )
    whole = [train, whole_day(days[26]), whole_day(days[27])]
    with caplog.at_level("WARNING"):
        warn_partial_days(windows, whole)
    assert caplog.text == ""
    half = whole[2].iloc[::2]  # every other row: the whole day, thinly
    with caplog.at_level("WARNING"):
        warn_partial_days(windows, [train, whole[1], half])
    assert "test window's day 2024-03-31 has 300 rows against 600 on a typical" not in caplog.text
    third = whole[2].iloc[::3]
    with caplog.at_level("WARNING"):
        warn_partial_days(windows, [train, whole[1], third])
    assert "test window's day 2024-03-31 has 200 rows against 600 on a typical training " \
        "Sunday, spread over the whole day" in caplog.text  # fmt: skip
    # a training window that keeps a fifth of its negatives is compared as if whole
    caplog.clear()
    sampled = train.iloc[::5]
    with caplog.at_level("WARNING"):
        warn_partial_days(windows, [sampled, whole[1], whole[2]], negative_rate=0.2)
    assert caplog.text == ""
    caplog.clear()
    gap = train[train["day"] != days[10]]
    with caplog.at_level("WARNING"):
        warn_partial_days(windows, [gap, whole[1], whole[2]])
    assert "has no events on 1 of its 26 days (2024-03-14): a missing partition?" in caplog.text


def test_a_runs_warnings_are_recorded_with_it(project: Path) -> None:
    result = train(project, ["dates.train_days=3", "features.lookback_days=[60]"])
    tags = mlflow_client(project).get_run(result.run_id).data.tags
    count = int(tags["replayml.warnings.count"])
    assert count >= 1
    assert "features.lookback_days=[60] look back to" in tags["replayml.warnings"]
    plain = train(project, ["dates.train_days=3"])
    plain_tags = mlflow_client(project).get_run(plain.run_id).data.tags
    assert "features.lookback_days" not in plain_tags.get("replayml.warnings", "")
    # a review shows them, for whoever judges the run by its link
    from replayml.review import review
    from server_fixtures import spec_for

    spec = spec_for(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    markdown = review(result.run_id, plain.run_id, spec=spec).markdown
    assert f"**The run trained with {count} warning(s)**" in markdown
    assert "## Warnings" in markdown and "features.lookback_days=[60] look back" in markdown
    alone = review(result.run_id, None, spec=spec).markdown  # no baseline: a summary
    assert "## Warnings" in alone


def test_train_py_outside_the_environment_says_how_to_install(project: Path) -> None:
    # -S: no site-packages, as a Python without the project's environment
    proc = subprocess.run(
        [sys.executable, "-S", "train.py"], cwd=project, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "error: hydra is not installed in" in proc.stderr
    assert "make install" in proc.stderr and "Traceback" not in proc.stderr
