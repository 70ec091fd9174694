"""A real `mlflow server` that fails: unreachable at start (B5) and dying mid-run (B6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_fixtures import ready, start_server

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
    kept = Path(output.split("kept in ")[1].split()[0].rstrip("."))
    assert (kept / "model.txt").is_file() and (kept / "metrics.json").is_file()
    assert (kept / "lineage.json").is_file()
