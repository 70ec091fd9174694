"""A real `mlflow server` that fails: unreachable at start (B5) and dying mid-run (B6)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_fixtures import _stop, ready, start_server

pytestmark = pytest.mark.slow


def test_server_dying_mid_run_fails_bounded_and_keeps_results(
    project: Path, tmp_path: Path
) -> None:  # B6
    server = ready(start_server(tmp_path / "server"))
    proc = subprocess.Popen(
        [sys.executable, "train.py", "model.num_boost_round=300", "model.learning_rate=0.01",
         "model.early_stopping_rounds=300"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": server.url},
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "training ..." in line:
            break
    os.killpg(server.proc.pid, signal.SIGKILL)  # the server (and its workers) die mid-training
    server.proc.wait()
    start = time.monotonic()
    rest, _ = proc.communicate(timeout=180)
    output = "".join(lines) + rest
    assert proc.returncode == 2, output[-3000:]
    assert time.monotonic() - start < 120
    assert server.url in output
    assert "kept in" in output
    # why the run stopped is said, not only why it could not be marked FAILED afterwards
    assert re.search(r"run [0-9a-f]{32} stopped \(.*Connection refused.*\) and could not be "
                     r"marked FAILED", output), output[-3000:]  # fmt: skip
    kept = Path(output.split("kept in ")[1].split()[0].rstrip("."))
    assert (kept / "model.txt").is_file() and (kept / "metrics.json").is_file()
    assert (kept / "lineage.json").is_file()


def test_server_dying_mid_replay_is_a_clear_error(project: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    server = ready(start_server(tmp_path / "server"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
    # many rounds without early stopping: the replay is still training when the server dies
    slow = ["model.num_boost_round=1000", "model.early_stopping_rounds=0"]
    trained = subprocess.run(
        [sys.executable, "train.py", *slow], cwd=project, env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = MlflowClient(server.url)
    (original,) = client.search_runs(
        ["0", *[e.experiment_id for e in client.search_experiments()]]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "replayml", "replay", original.info.run_id],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline, training = time.monotonic() + 120, False
    while not training and time.monotonic() < deadline and proc.poll() is None:
        runs = client.search_runs([original.info.experiment_id])
        training = any(r.info.status == "RUNNING" for r in runs)
        time.sleep(0.2)
    assert training, "the replay never started training"
    os.killpg(server.proc.pid, signal.SIGKILL)  # the server (and its workers) die mid-replay
    server.proc.wait()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2, err[-3000:]  # an error, not DIFFERENT (1)
    assert "Traceback" not in err, err[-3000:]
    assert f"error: the replay of run {original.info.run_id} failed" in err
    assert server.url in err  # the trainer's own message names the store


def test_an_artifact_upload_the_server_fails_is_one_line_naming_the_run(
    project: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from mlflow.tracking import MlflowClient

    server = ready(start_server(tmp_path / "server"))
    request.addfinalizer(lambda: _stop(server.proc))
    client = MlflowClient(server.url)
    proc = subprocess.Popen(
        [sys.executable, "train.py", "model.num_boost_round=1000",
         "model.early_stopping_rounds=0"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": server.url},
    )  # fmt: skip
    deadline, running = time.monotonic() + 120, []
    while not running and time.monotonic() < deadline and proc.poll() is None:
        exps = [e.experiment_id for e in client.search_experiments()]
        running = [r for r in client.search_runs(exps) if r.info.status == "RUNNING"]
        time.sleep(0.2)
    assert running, "the run never started"
    run = running[0]
    # the server's artifact store cannot write the run's plots: a file where the folder goes
    folder = server.artifacts / run.info.experiment_id / run.info.run_id / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plots").write_text("not a folder")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert f"run {run.info.run_id} is marked FAILED" in err, err[-3000:]
    assert server.url in err and "kept in" in err
    assert client.get_run(run.info.run_id).info.status == "FAILED"
