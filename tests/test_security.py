"""Secrets never land in what a run writes (E2); artifact paths cannot escape (E4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import all_runs, mlflow_client, run_train_py
from replayml.errors import ReplaymlError
from replayml.redact import is_secret_key, redact_override, redact_text
from replayml.tracking.run import safe_artifact_path

CANARY_CLI = "cAnArY-cli-7f3a9"
CANARY_ENV = "cAnArY-env-51d2c"
CANARY_URL = "cAnArY-url-0b8e4"


def _everything_written(root: Path) -> list[tuple[Path, str]]:
    files = []
    for base in ("mlruns", "outputs", "multirun"):
        for p in (root / base).rglob("*"):
            if p.is_file() and p.suffix not in {".png", ".db", ".lock"}:
                files.append((p, p.read_text(errors="replace")))
    return files


def _store_dump(root: Path) -> str:
    parts = []
    for run in all_runs(root):
        parts += [repr(run.data.params), repr(run.data.tags), repr(run.info)]
        for inp in run.inputs.dataset_inputs:
            parts.append(repr(inp.dataset))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_secrets_never_appear_in_anything_written(project: Path, mode: str) -> None:  # E2
    args = [
        f"+tags.api_token={CANARY_CLI}",
        "+tags.deploy_key=${oc.env:REPLAYML_TEST_DEPLOY}",
        f"+tags.source=https://bob:{CANARY_URL}@git.example.com/reco.git",
        "+tags.num_tokens=512",
        "model=popularity",
        "dates=last_7d",
    ]
    if mode == "sweep":
        args = ["-m", *args, "dates.train_days=3,4"]
    proc = run_train_py(project, *args, env={"REPLAYML_TEST_DEPLOY": CANARY_ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = all_runs(project)
    assert runs
    for canary in (CANARY_CLI, CANARY_ENV, CANARY_URL):
        assert canary not in proc.stdout + proc.stderr
        dump = _store_dump(project)
        assert canary not in dump, dump[max(0, dump.find(canary) - 300) : dump.find(canary) + 50]
        for path, text in _everything_written(project):
            assert canary not in text, path
    child = next(r for r in runs if r.data.tags.get("replayml.sweep.role") != "parent")
    assert child.data.tags["api_token"] == "***REDACTED***"
    assert child.data.tags["deploy_key"] == "***REDACTED***"
    assert child.data.tags["num_tokens"] == "512"  # no false positive
    assert "git.example.com" in child.data.tags["source"]


@pytest.mark.slow
def test_a_failing_sweep_over_secret_values_leaks_none(project: Path) -> None:
    # Hydra prints a failed job's overrides straight to stderr, dumps the composed config
    # under hydra.verbose before any job runs, and keeps the sweep's overrides in
    # multirun.yaml: a sweep over two secret values with one failing job, verbosely
    second = "cAnArY-two-93c1e"
    proc = run_train_py(
        project, "-m", "hydra.verbose=true", f"+tags.api_token={CANARY_CLI},{second}",
        "model=popularity", "dates=last_7d", "dates.train_days=3,400",
    )  # fmt: skip
    assert proc.returncode != 0  # the 400-day window does not fit the data
    assert "dates.train_days=400" in proc.stderr  # the failed job's overrides are named...
    for canary in (CANARY_CLI, second):
        assert canary not in proc.stdout + proc.stderr  # ...without the secrets
        assert canary not in _store_dump(project)
        for path, text in _everything_written(project):
            assert canary not in text, path


def test_a_malformed_log_call_is_not_made_fatal_by_the_redaction() -> None:
    import logging

    from replayml.redact import install_log_redaction

    install_log_redaction({"s3cr3t-value"})
    record = logging.getLogRecordFactory()("x", logging.INFO, __file__, 1, "%d rows", ("a",), None)
    with pytest.raises(TypeError):  # logging reports it when a handler formats the record
        record.getMessage()
    clean = logging.getLogRecordFactory()(
        "x", logging.INFO, __file__, 1, "k=%s", ("s3cr3t-value",), None
    )
    assert clean.getMessage() == "k=***REDACTED***"


@pytest.mark.parametrize(
    ("key", "secret"),
    [("tags.api_token", True), ("db.password", True), ("client_secret", True),
     ("aws.secret_access_key", True), ("API_KEY", True), ("num_tokens", False),
     ("max_tokens", False), ("tokenizer", False), ("model.learning_rate", False),
     ("author", False)],
)  # fmt: skip
def test_secret_key_detection(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_override_and_url_redaction() -> None:
    assert redact_override("+db.password=hunter22") == "+db.password=***REDACTED***"
    assert redact_override("model.num_leaves=31") == "model.num_leaves=31"
    assert "hunter22" not in redact_text("postgresql://u:hunter22@db:5432/x")


@pytest.mark.parametrize(
    "path", ["../escape.txt", "/etc/passwd", "a/../../b", "%2e%2e/x", "%252e%252e/x", "C:/x"]
)
def test_artifact_paths_that_escape_are_refused(path: str) -> None:  # E4
    with pytest.raises(ReplaymlError, match="not allowed"):
        safe_artifact_path(path)


def test_ordinary_artifact_paths_pass() -> None:
    assert safe_artifact_path("plots/pr_curve.png") == "plots/pr_curve.png"


def test_no_secret_env_reaches_the_environment_tags(project: Path) -> None:
    os.environ["REPLAYML_TEST_UNUSED_TOKEN"] = CANARY_ENV
    try:
        from conftest import train

        result = train(project, ["model=popularity", "dates=last_7d"])
    finally:
        os.environ.pop("REPLAYML_TEST_UNUSED_TOKEN")
    run = mlflow_client(project).get_run(result.run_id)
    assert CANARY_ENV not in repr(run.data.tags) + repr(run.data.params)


def test_a_seed_from_the_environment_is_not_shown_in_the_seed_tag(project: Path) -> None:
    proc = run_train_py(
        project, "model=popularity", "dates=last_7d", "model.seed=${oc.env:REPLAYML_TEST_SEED}",
        env={"REPLAYML_TEST_SEED": "4242"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    assert run.data.params["model.seed"] == "***REDACTED***"
    assert run.data.tags["replayml.seed.model"] == "***REDACTED***"
    assert run.data.tags["replayml.seed.sampling"] != "***REDACTED***"  # not from the env


def test_a_server_address_from_the_environment_is_shown_its_password_is_not(
    project: Path,
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: the run fails fast, naming it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plain = run_train_py(
        project, "tracking=server", env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    )
    assert plain.returncode != 0
    assert f"http://127.0.0.1:{port}" in plain.stderr, plain.stderr[-2000:]
    assert "REDACTED" not in plain.stderr
    secret = run_train_py(
        project,
        "tracking=server",
        env={"MLFLOW_TRACKING_URI": f"http://ana:hunter2pw@127.0.0.1:{port}"},
    )
    assert secret.returncode != 0
    assert "hunter2pw" not in secret.stdout + secret.stderr
    assert f"127.0.0.1:{port}" in secret.stderr, secret.stderr[-2000:]
    assert all_runs(project) == []


def test_an_address_with_a_query_string_from_the_environment_stays_secret() -> None:
    from replayml.redact import secret_values

    keyed = "http://127.0.0.1:5869/mlflow?key=BBB222SECRET"
    assert keyed in secret_values([], [keyed])
    assert secret_values([], ["http://127.0.0.1:5869/mlflow"]) == set()
    assert secret_values([], ["https://ana:hunter2pw@mlflow.example.com"]) == {"hunter2pw"}
