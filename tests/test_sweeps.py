"""Sweeps and concurrency: parent runs, children with lineage, nothing lost (C1-C6)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, all_runs, git, mlflow_client, run_train_py

pytestmark = pytest.mark.slow

FAST = ["model=popularity", "dates=last_7d"]  # the full pipeline and lineage, no boosting


def _by_role(root: Path) -> tuple[list, list]:
    runs = all_runs(root)
    parents = [r for r in runs if r.data.tags.get("replayml.sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("replayml.sweep.role") == "child"]
    return parents, children


def test_sweep_has_a_parent_with_summary_and_children_with_lineage(project: Path) -> None:
    proc = run_train_py(
        project, "-m", "model.learning_rate=0.05,0.2", "model.num_boost_round=30",
        env={"MLFLOW_RUN_ID": "0123456789abcdef0123456789abcdef"},  # a leaked id (C6)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parents, children = _by_role(project)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["replayml.sweep_id"] == parent.data.tags["replayml.sweep_id"]
        assert child.data.tags["replayml.tree_hash"] and child.info.status == "FINISHED"
        # named by its overrides, so the UI's list of children says which is which
        overrides = json.loads(child.data.tags["replayml.overrides"])
        assert child.info.run_name == " ".join(overrides)
        assert any(o.startswith("model.learning_rate=") for o in overrides)
    best = max(children, key=lambda r: r.data.metrics["test_auc"])
    assert parent.data.tags["replayml.sweep.best_run_id"] == best.info.run_id
    client = mlflow_client(project)
    table = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.md")).read_text()
    assert "model.learning_rate=0.05" in table and "model.learning_rate=0.2" in table
    # the CLI prints the same table, best first
    cli = subprocess.run(
        [sys.executable, "-m", "replayml", "sweep", parent.data.tags["replayml.sweep_id"]],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    rows = [line for line in cli.stdout.splitlines() if line.startswith("| 1 |")]
    assert rows and best.info.run_id in rows[0]
    sweep_id = parent.data.tags["replayml.sweep_id"]
    unknown = subprocess.run(
        [sys.executable, "-m", "replayml", "sweep", "deadbeef"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert "no sweep 'deadbeef' (sweep id or parent run id)" in unknown.stderr
    assert f"the latest sweeps there: {sweep_id}" in unknown.stderr
    # the parent trained nothing: a replay of it points at its children
    from replayml.errors import RunNotFoundError
    from replayml.replay import replay

    with pytest.raises(RunNotFoundError, match=f"is the parent run of sweep {sweep_id}: it "):
        replay(parent.info.run_id, project=project)


def test_children_scored_on_different_test_sets_have_no_best(project: Path) -> None:
    # the same windows, but duplicates kept in one job: other test rows
    proc = run_train_py(project, "-m", *FAST, "preprocessing.dedup=true,false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best - (the children were scored on 2 different test sets" in proc.stdout
    parents, children = _by_role(project)
    (parent,) = parents
    assert len(children) == 2 and "replayml.sweep.best_run_id" not in parent.data.tags
    assert len(json.loads(parent.data.tags["replayml.sweep.test_sets"])) == 2
    assert len({c.data.tags["replayml.dates.test_start"] for c in children}) == 1
    table = Path(
        mlflow_client(project).download_artifacts(parent.info.run_id, "sweep_summary.md")
    ).read_text()
    assert "No best child: the children were scored on 2 different test sets" in table
    rows = [line for line in table.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    hashes = {c.data.tags["replayml.test_rows_hash"][:8] for c in children}
    assert len(hashes) == 2 and all(any(h in line for line in rows) for h in hashes)


def test_the_objectives_usual_direction_ranks_the_children(project: Path) -> None:
    # no metric of this name has a usual direction: the sweep stops before any run
    bad = run_train_py(
        project, "-m", *FAST, "tracking.objective=test_speed", "tracking.objective_direction=max"
    )
    assert bad.returncode == 2
    assert "tracking.objective='test_speed' is not a metric runs record; use one of " in (
        bad.stderr
    )
    assert "test_ndcg_at_10" in bad.stderr and all_runs(project) == []
    proc = run_train_py(
        project, "-m", "dates=last_7d", "model.num_boost_round=15", "model.num_leaves=3,31",
        "tracking.objective=test_logloss",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parents, children = _by_role(project)
    (parent,) = parents
    lowest = min(children, key=lambda r: r.data.metrics["test_logloss"])
    assert parent.data.tags["replayml.sweep.objective_direction"] == "min"
    assert parent.data.tags["replayml.sweep.best_run_id"] == lowest.info.run_id

    def table(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "replayml", "sweep", parent.info.run_id, *args],
            cwd=project, capture_output=True, text=True, check=False,
        )  # fmt: skip

    # another objective on the command line brings its own usual direction
    by_auc = table("--objective", "test_auc")
    assert "Objective: test_auc (max)" in by_auc.stdout, by_auc.stderr
    highest = max(children, key=lambda r: r.data.metrics["test_auc"])
    first = next(line for line in by_auc.stdout.splitlines() if line.startswith("| 1 |"))
    assert highest.info.run_id in first
    nosuch = table("--objective", "test_aucc")
    assert nosuch.returncode == 2
    assert "--objective 'test_aucc': no child of the sweep has that metric" in nosuch.stderr
    assert "test_auc" in nosuch.stderr


@pytest.mark.parametrize(
    ("grid", "said"),
    [
        # the ranker records no log loss: the sweep could never rank its jobs
        (["model=lgbm,lgbm_ranker", "tracking.objective=test_logloss"],
         "tracking.objective='test_logloss' is not recorded by model=lgbm_ranker runs"),
        # a metric no run records
        (["model.num_leaves=15,31", "tracking.objective=baseline_f1"],
         "tracking.objective='baseline_f1' is not a metric runs record"),
        # the baseline trains nothing, so it has no validation metric to select on
        (["model=popularity,lgbm", "tracking.objective=valid_best_auc"],
         "tracking.objective='valid_best_auc' is not recorded by model=popularity runs"),
        (["model.learning_rate=0,0.1"],
         "sweep job `dates=last_7d model.learning_rate=0`: model.learning_rate=0.0 is out of"),
        (["dates.anchor=2024-04-20,2023-01-01"],
         "sweep job `dates=last_7d dates.anchor=2023-01-01`: dates: the windows train=2022-12-24"),
        (["experiment=quick,quik"],
         "sweep job `dates=last_7d experiment=quik`: In 'config': Could not find 'experiment/"),
    ],
)  # fmt: skip
def test_a_job_that_could_not_train_or_be_ranked_stops_the_sweep_before_any_run(
    project: Path, grid: list[str], said: str
) -> None:
    proc = run_train_py(project, "-m", "dates=last_7d", *grid)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert said in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert all_runs(project) == []  # no parent, no child


def test_edited_data_stops_the_sweep_before_any_run(project: Path) -> None:
    import pyarrow.parquet as pq

    part = sorted((project / "data" / "events").glob("date=*/part-0.parquet"))[-1]
    table = pq.read_table(part)
    part.unlink()  # break any link into the DVC cache, as an editor would
    pq.write_table(table.slice(1), part)
    proc = run_train_py(project, "-m", "dates=last_7d", "model.num_leaves=7,15")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "sweep job `dates=last_7d model.num_leaves=7`: " in proc.stderr, proc.stderr[-3000:]
    assert f"{part.relative_to(project).as_posix()} differs from data.dvc" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all_runs(project) == []  # no parent, no child


def test_sweep_table_keeps_the_sweeps_objective_and_the_jobs_that_never_ran(
    project: Path,
) -> None:
    proc = run_train_py(
        project, "-m", "dates=last_7d", "model.num_boost_round=20",
        "tracking.objective=test_logloss", "tracking.objective_direction=min",
        "preprocessing.min_item_support=1,3,100000000",
    )  # fmt: skip
    assert proc.returncode != 0  # one job keeps no training rows: it never runs
    # the job's error is named once as it happens and once at the end, without a traceback
    assert proc.stderr.count("error: dates: the train window") == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    parents, children = _by_role(project)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    table = Path(
        mlflow_client(project).download_artifacts(parent.info.run_id, "sweep_summary.md")
    ).read_text()
    cli = subprocess.run(
        [sys.executable, "-m", "replayml", "sweep", parent.data.tags["replayml.sweep_id"]],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == table  # the parent's own summary, read again
    assert "Objective: test_logloss (min)" in cli.stdout
    assert "never ran: 1" in cli.stdout
    never = [line for line in cli.stdout.splitlines() if "| NEVER RAN |" in line]
    assert len(never) == 1 and "preprocessing.min_item_support=100000000" in never[0]
    assert "dates: the train window" in never[0]  # why it never ran
    ranked = [line for line in cli.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    by_loss = sorted(children, key=lambda r: r.data.metrics["test_logloss"])
    assert [r.info.run_id in line for r, line in zip(by_loss, ranked, strict=True)] == [True] * 2
    # an explicit objective still overrides the sweep's own
    by_auc = subprocess.run(
        [sys.executable, "-m", "replayml", "sweep", parent.info.run_id, "--objective",
         "test_auc", "--direction", "max"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert by_auc.returncode == 0, by_auc.stderr
    assert "Objective: test_auc (max)" in by_auc.stdout and "| NEVER RAN |" in by_auc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "replayml", "sweep", parent.info.run_id, "--direction", "up"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--direction 'up'" in bad.stderr


def test_parallel_sweep_splits_threads_and_loses_nothing(project: Path) -> None:  # C4
    proc = run_train_py(
        project, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST,
        "preprocessing.min_item_support=1,3,100000000",
    )  # fmt: skip
    assert proc.returncode != 0  # one job keeps no training rows
    parents, children = _by_role(project)
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    cores = os.cpu_count() or 1
    assert {c.data.params["model.num_threads"] for c in children} == {str(max(1, cores // 2))}
    parent = parents[0]
    assert parent.info.status == "FAILED"
    assert json.loads(parent.data.tags["replayml.sweep.never_ran"]) == [
        ["model=popularity", "dates=last_7d", "preprocessing.min_item_support=100000000"]
    ]
    rows = json.loads(
        Path(
            mlflow_client(project).download_artifacts(parent.info.run_id, "sweep_summary.json")
        ).read_text()
    )
    never = [r for r in rows if r["status"] == "NEVER_RAN"]
    assert len(never) == 1 and "dates: the train window" in never[0]["error"]  # from a worker


def test_two_sweeps_in_the_same_second_do_not_collide(project: Path) -> None:  # C3
    cmd = [sys.executable, "train.py", "-m", *FAST, "dates.train_days=3,4"]
    procs = [subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    parents, children = _by_role(project)
    assert len(parents) == 2 and len(children) == 4
    assert len({p.data.tags["replayml.sweep_id"] for p in parents}) == 2
    sweep_dirs = list((project / "multirun").glob("*/*"))
    assert len(sweep_dirs) == 2


def test_sweeps_into_one_fixed_folder_keep_their_own_ids_and_errors(project: Path) -> None:
    from replayml.sweep import job_errors, write_job_error

    fixed = "hydra.sweep.dir=multirun/lr"
    first = run_train_py(
        project, "-m", *FAST, fixed, "preprocessing.min_item_support=1,100000000"
    )  # fmt: skip
    assert first.returncode != 0  # the second job keeps no training rows
    second = run_train_py(project, "-m", *FAST, fixed, "dates.train_days=3,4")
    assert second.returncode == 0, second.stderr[-3000:]
    parents, _ = _by_role(project)
    ids = {p.info.status: p.data.tags["replayml.sweep_id"] for p in parents}
    assert set(ids) == {"FAILED", "FINISHED"} and ids["FINISHED"] == ids["FAILED"] + "-2"
    for status, sweep_id in ids.items():
        cli = subprocess.run(
            [sys.executable, "-m", "replayml", "sweep", sweep_id],
            cwd=project, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert ("| NEVER RAN |" in cli.stdout) == (status == "FAILED"), cli.stdout
    # an error file left by the earlier sweep is not read as one of the later sweep's
    folder = project / "multirun" / "lr"
    write_job_error(folder / "7", ["dates.train_days=9"], "boom")
    assert job_errors(folder)["dates.train_days=9"] == "boom"
    later = (folder / "7").stat().st_mtime + 5
    assert "boom" not in job_errors(folder, since=later).values()
    assert "boom" in job_errors(folder, since=later - 60).values()


def test_joblib_sweep_jobs_land_in_the_announced_sweep_folder(project: Path) -> None:
    # each loky worker resolves hydra.sweep.dir again, in its own process and maybe second
    proc = run_train_py(
        project, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST,
        "dates.train_days=3,4,5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    announced = re.findall(r"sweep output dir : (\S+)", proc.stdout + proc.stderr)
    assert len(announced) == 1, proc.stdout + proc.stderr
    sweep_dir = (project / announced[0]).resolve()
    assert [p.resolve() for p in (project / "multirun").glob("*/*")] == [sweep_dir]
    jobs = sorted(p.parent.resolve() for p in (project / "multirun").rglob("metrics.json"))
    assert jobs == [sweep_dir / str(n) for n in range(3)]
    _, children = _by_role(project)
    assert len(children) == 3


def _parallel_train(root: Path, n: int, extra: list[str]) -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen(
            [sys.executable, "train.py", *FAST, *extra, f"tracking.run_name=job{i}"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def test_eight_parallel_jobs_on_a_fresh_store_all_succeed(project: Path) -> None:  # C1
    assert not (project / "mlruns").exists()
    results = _parallel_train(project, 8, [])
    assert [r.returncode for r in results] == [0] * 8, [r.stderr[-800:] for r in results]
    runs = all_runs(project)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)


def test_twelve_parallel_jobs_keep_every_metric(project: Path) -> None:  # C2
    results = _parallel_train(project, 12, [])
    assert [r.returncode for r in results] == [0] * 12, [r.stderr[-800:] for r in results]
    runs = all_runs(project)
    assert len(runs) == 12
    names = set(runs[0].data.metrics)
    assert {"test_auc", "baseline_auc", "rows_train"} <= names
    for r in runs:
        assert r.info.status == "FINISHED"
        assert set(r.data.metrics) == names


def test_killed_worker_is_marked_and_unrun_jobs_are_named(project: Path) -> None:  # C5
    import signal
    import time

    slow = ["model.num_boost_round=100000", "model.early_stopping_rounds=100000",
            "model.learning_rate=0.001"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         *slow, "model.num_leaves=7,15,31,63"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the parent run exists once the store is initialised
        if line.startswith("sweep "):
            break
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline:
        time.sleep(2)
        running = [
            r for r in all_runs(project)
            if r.data.tags.get("replayml.sweep.role") == "child" and r.info.status == "RUNNING"
        ]  # fmt: skip
        if running:
            victim = running[0]
    assert victim is not None, "no child started"
    os.kill(int(victim.data.tags["replayml.pid"]), signal.SIGKILL)
    time.sleep(1)
    # the remaining in-flight job would run for ever: stop the sweep as a user would
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    parents, children = _by_role(project)
    assert len(parents) == 1
    assert parents[0].info.status == "FAILED"
    killed = next(c for c in children if c.info.run_id == victim.info.run_id)
    assert killed.info.status == "KILLED"
    assert "process" in killed.data.tags["replayml.doctor"]
    never = json.loads(parents[0].data.tags["replayml.sweep.never_ran"])
    assert never, "the jobs that never ran are named"
    assert all(any(o.startswith("model.num_leaves=") for o in job) for job in never)
    assert not any(c.info.status == "RUNNING" for c in _by_role(project)[1])


SLOW = ["model.num_boost_round=100000", "model.early_stopping_rounds=100000",
        "model.learning_rate=0.001"]  # fmt: skip


def _slow_sweep(project: Path, *args: str, running: int) -> subprocess.Popen[str]:
    """Start a sweep of jobs that train for ever; return once `running` of them train."""
    import time

    proc = subprocess.Popen(
        [sys.executable, "train.py", "-m", *SLOW, *args],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the store is initialised (reading it earlier would race)
        if line.startswith("sweep "):
            break
    found: list = []
    deadline = time.monotonic() + 240
    while len(found) < running and time.monotonic() < deadline:
        time.sleep(1)
        found = [
            r for r in all_runs(project)
            if r.data.tags.get("replayml.sweep.role") == "child" and r.info.status == "RUNNING"
        ]  # fmt: skip
    assert len(found) >= running, f"{running} jobs never ran at once"
    return proc


def test_a_terminated_parallel_sweep_stops_its_workers_and_marks_its_runs(
    project: Path,
) -> None:
    import signal

    import psutil

    proc = _slow_sweep(
        project, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.num_leaves=7,15,31",
        running=2,
    )  # fmt: skip
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)  # what a CI timeout does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "error: received signal 15; stopping the sweep" in err
    parents, children = _by_role(project)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"]
    alive = [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], alive


def test_a_killed_sweeps_parent_is_found_by_doctor_and_a_live_one_is_not(
    project: Path,
) -> None:
    import signal
    import time

    proc = _slow_sweep(project, "model.num_leaves=7,15", running=1)

    def doctor(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "replayml", "doctor", *args], cwd=project,
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    time.sleep(3)  # older than the stale limit below: on this host, its process decides
    (parent,) = _by_role(project)[0]
    assert parent.data.tags["replayml.pid"] == str(proc.pid)
    assert parent.info.run_id not in doctor("--stale-after", "1")  # alive: its process is there
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    listed = doctor()
    assert parent.info.run_id in listed and f"process {proc.pid}" in listed
    doctor("--fix")
    assert _by_role(project)[0][0].info.status == "KILLED"
    assert all(c.info.status == "KILLED" for c in _by_role(project)[1])


def test_a_parallel_sweep_that_succeeds_exits_zero_and_stops_its_workers(
    project: Path,
) -> None:
    """train.py ends without the interpreter's teardown only when no worker is alive: the
    joblib launcher's worker processes are stopped by the normal shutdown, not waited on."""
    proc = run_train_py(
        project, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST,
        "model.learning_rate=0.05,0.1", timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    parents, children = _by_role(project)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)


def _log_same_datasets(uri: str, barrier, errors) -> None:  # noqa: ANN001
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from replayml.tracking.run import RunHandle

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("race").experiment_id
    handle = RunHandle(client, None, exp, client.create_run(exp).info.run_id)  # type: ignore[arg-type]
    for k in range(5):
        barrier.wait()  # every process writes the same new dataset at the same moment
        try:
            handle.log_dataset(
                pd.DataFrame({"a": [k]}), name=f"data{k}", digest=f"{k:064d}",
                source="file:///data", context="training",
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported back to the test
            errors.put(f"{type(exc).__name__}: {str(exc)[:200]}")


def test_parallel_jobs_logging_the_same_dataset_all_record_it(tmp_path: Path) -> None:  # C1
    """MLflow looks a dataset up and then inserts it; parallel jobs of one sweep log the same
    data version at the same moment, and none of them may fail for it."""
    import multiprocessing

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("race")
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_log_same_datasets, args=(uri, barrier, errors)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    failures = [errors.get() for _ in range(errors.qsize())]
    assert failures == [] and all(p.exitcode == 0 for p in procs)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 6
    for run in runs:
        assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == [
            f"data{k}" for k in range(5)
        ]


def test_the_table_always_shows_the_objective_it_ranks_by() -> None:
    from replayml.sweep import SUMMARY_METRICS
    from replayml.tracking.sweeps import ChildRow, SweepSummary, summary_markdown

    rows = [
        ChildRow("a", "FINISHED", ["model.eval_at=5"], {"test_ndcg_at_5": 0.4445}, "u/a"),
        ChildRow("b", "FINISHED", ["model.eval_at=5"], {"test_ndcg_at_5": 0.4268}, "u/b"),
    ]
    summary = SweepSummary("s", "p", "u/p", "test_ndcg_at_5", "max", rows)
    table = summary_markdown(summary, SUMMARY_METRICS)
    header = next(line for line in table.splitlines() if line.startswith("| # |"))
    assert "test_ndcg_at_5" in header and "test_ndcg_at_5" not in SUMMARY_METRICS
    assert "0.44450" in table and "0.42680" in table


def test_a_sweep_can_select_on_the_validation_window(project: Path) -> None:
    # choosing on the test window makes its metrics optimistic; the validation metric early
    # stopping used, at the chosen iteration, leaves the test window unseen
    proc = run_train_py(
        project, "-m", "dates=last_7d", "model.num_boost_round=15", "model.num_leaves=3,31",
        "tracking.objective=valid_best_auc",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parents, children = _by_role(project)
    (parent,) = parents
    client = mlflow_client(project)
    for child in children:
        best = int(child.data.metrics["best_iteration"])
        history = client.get_metric_history(child.info.run_id, "valid_auc")
        at_best = next(m.value for m in history if m.step == best)
        assert child.data.metrics["valid_best_auc"] == at_best
    highest = max(children, key=lambda r: r.data.metrics["valid_best_auc"])
    assert parent.data.tags["replayml.sweep.best_run_id"] == highest.info.run_id
    assert parent.data.tags["replayml.sweep.objective_direction"] == "max"


_EDIT_CALLBACK = '''
import os
from pathlib import Path

from hydra.experimental.callback import Callback


class EditAfterEachJob(Callback):
    """Saves an edit to a module the sweep's process has already imported."""

    def on_job_end(self, config, job_return, **kwargs):
        path = Path(os.environ["EDIT_FILE"])
        path.write_text(path.read_text() + "\\n# edited between jobs\\n")
'''


@pytest.mark.parametrize("direction", ["max", "min"])  # one of them ranks the edited job first
def test_an_edit_between_a_sweeps_jobs_makes_the_later_jobs_not_replayable(
    project: Path, tmp_path: Path, direction: str
) -> None:
    # the jobs of a sweep share one process: a module it imported for the first job is what
    # the second runs, whatever the file says by then (the project runs its own src/)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    # (committed with the project: code imported from outside it would be unrecorded code)
    (project / "edit_callback.py").write_text(_EDIT_CALLBACK)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "code")
    builders = project / "src" / "replayml" / "features" / "builders.py"
    proc = run_train_py(
        project, "-m", "model.learning_rate=0.05,0.2", "model.num_boost_round=20",
        "+hydra.callbacks.edit._target_=edit_callback.EditAfterEachJob",
        f"tracking.objective_direction={direction}",
        env={"EDIT_FILE": str(builders)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, children = _by_role(project)
    first, second = sorted(children, key=lambda r: r.info.start_time)
    assert first.data.tags["replayml.replayable"] == "true"
    assert first.data.tags["replayml.code.package_in_project"] == "true"
    assert second.data.tags["replayml.replayable"] == "false"
    reasons = second.data.tags["replayml.not_replayable_reasons"]
    assert "replayml's features/builders.py changed after this process imported it" in reasons
    # the sweep's table says so when such a child is the best one
    (parent,) = _by_role(project)[0]
    table = Path(
        mlflow_client(project).download_artifacts(parent.info.run_id, "sweep_summary.md")
    ).read_text()
    best = parent.data.tags["replayml.sweep.best_run_id"]
    noted = "The best child is not replayable" in table
    assert noted == (best == second.info.run_id), table


def test_a_validation_objective_compares_only_children_on_the_same_validation_rows(
    project: Path,
) -> None:
    # same test rows (no preprocessing moves with the windows), other validation rows: the
    # wider window's lower log loss says nothing about which model is better
    proc = run_train_py(
        project, "-m", "preprocessing=none", "dates.valid_days=1,3",
        "tracking.objective=valid_best_logloss", "model.num_boost_round=20",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = _by_role(project)
    assert len(children) == 2
    tests = {c.data.tags["replayml.test_rows_hash"] for c in children}
    valids = {c.data.tags["replayml.valid_rows_hash"] for c in children}
    assert len(tests) == 1 and len(valids) == 2
    assert "replayml.sweep.best_run_id" not in parent[0].data.tags
    table = mlflow_client(project).download_artifacts(parent[0].info.run_id, "sweep_summary.md")
    assert (
        "No best child: the children were scored on 2 different validation sets"
        in Path(table).read_text()
    )


def test_a_sweep_over_model_kinds_can_select_on_the_validation_window(project: Path) -> None:
    # the classifier also records the ranker's validation NDCG, the ranker the classifier's
    # AUC: the test window stays unseen when the question is "which kind?"
    proc = run_train_py(
        project, "-m", "model=lgbm,lgbm_ranker", "tracking.objective=valid_best_ndcg_at_10",
        "model.num_boost_round=20",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = _by_role(project)
    for child in children:
        assert {"valid_best_ndcg_at_10", "valid_best_auc"} <= set(child.data.metrics)
    best = parent[0].data.tags["replayml.sweep.best_run_id"]
    top = max(children, key=lambda r: r.data.metrics["valid_best_ndcg_at_10"])
    assert best == top.info.run_id


def test_ctrl_c_stops_a_sweep_in_one_line(project: Path) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "train.py", "-m", *SLOW, "model.num_leaves=7,15"], cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the progress lines go to stdout
        if "training ..." in line:
            break
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the sweep's process
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, err[-3000:]
    assert "error: interrupted (Ctrl-C); jobs under way are marked KILLED" in err
    assert "Traceback" not in err
    (parent,), children = _by_role(project)
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["KILLED"]
    # a job the user stopped is counted as stopped, not as a failure of the sweep's code
    assert parent.data.tags["replayml.sweep.killed"] == "1"
    assert parent.data.tags["replayml.sweep.failed"] == "0"
