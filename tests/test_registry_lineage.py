"""What the registry says about a version's origin and inputs: the input columns an alias move
changes (warned on promote and rollback), the sweep and overrides a version was trained with
(tagged at register, shown by `replayml models`), and A/B labels set by `promote` — on real
runs and a real sweep in a real local MLflow store."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from conftest import run_train_py, train
from replayml.cli import app
from replayml.registry import model_rows, register
from server_fixtures import spec_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("run_elsewhere")]

FAST = ["dates=last_7d", "model.num_boost_round=10"]


@dataclass(frozen=True)
class Runs:
    uri: str
    full: str  # features=default: 26 input columns
    minimal: str  # features=minimal: 18 input columns
    best: str  # the sweep's best child (by test_auc)
    other: str  # the sweep's other child
    sweep_id: str


@pytest.fixture(scope="module")
def runs(template_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("lineage") / "proj"
    shutil.copytree(template_project, root, symlinks=True)
    full = train(root, [*FAST, "tracking.run_name=full"]).run_id
    minimal = train(root, [*FAST, "features=minimal", "tracking.run_name=minimal"]).run_id
    proc = run_train_py(root, "-m", *FAST, "model.num_leaves=2,15")
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(exps, "tags.`replayml.sweep.role` = 'parent'")
    children = client.search_runs(exps, "tags.`replayml.sweep.role` = 'child'")
    best = parent.data.tags["replayml.sweep.best_run_id"]
    (other,) = [c.info.run_id for c in children if c.info.run_id != best]
    return Runs(uri, full, minimal, best, other, parent.data.tags["replayml.sweep_id"])


def _cli(runs: Runs, *args: str):  # noqa: ANN202
    return CliRunner().invoke(app, [*args, "--tracking-uri", runs.uri], catch_exceptions=False)


def _client(runs: Runs) -> MlflowClient:
    return MlflowClient(tracking_uri=runs.uri, registry_uri=runs.uri)


def test_promote_and_rollback_warn_when_the_input_columns_change(runs: Runs) -> None:
    name = "reco-inputs"
    spec = spec_for(runs.uri)
    register(runs.full, name, spec=spec, alias="prod")
    register(runs.minimal, name, spec=spec)
    register(runs.best, name, spec=spec)  # default features too
    client = _client(runs)
    full = json.loads(client.get_model_version(name, "1").tags["replayml.inputs"])
    minimal = json.loads(client.get_model_version(name, "2").tags["replayml.inputs"])
    assert len(full) == 26 and len(minimal) == 18 and set(minimal) < set(full)
    dropped = [c for c in full if c not in minimal]

    promoted = _cli(runs, "promote", name, "2", "--alias", "prod")
    assert promoted.exit_code == 0, promoted.output
    assert f"{name}@prod: version 1 -> 2" in promoted.stdout
    (warning,) = [ln for ln in promoted.stderr.splitlines() if "input columns" in ln]
    assert "version 2 reads 18 columns, version 1" in warning and "read 26" in warning
    assert f"removed 8: {', '.join(dropped)}" in warning and "added" not in warning

    # a version registered before the tag existed: its model's signature says the same
    client.delete_model_version_tag(name, "1", "replayml.inputs")
    back = _cli(runs, "rollback", name, "--alias", "prod")
    assert back.exit_code == 0, back.output
    assert f"{name}@prod: version 2 -> 1" in back.stdout
    (warning,) = [ln for ln in back.stderr.splitlines() if "input columns" in ln]
    assert f"added 8: {', '.join(dropped)}" in warning and "removed" not in warning
    assert f"consumers of models:/{name}@prod must build the added columns" in warning.lower()
    assert "Model is missing inputs" in warning

    same = _cli(runs, "promote", name, "3", "--alias", "prod")  # same columns: no warning
    assert same.exit_code == 0, same.output
    assert "input columns" not in same.stderr
    # `register --alias` moves the alias too, and says so
    moved = register(runs.minimal, name, spec=spec, alias="prod").alias_move
    assert moved is not None and moved.from_version == "3"
    assert any(f"removed 8: {', '.join(dropped)}" in w for w in moved.warnings)


def test_register_records_the_sweep_and_overrides_and_models_shows_them(runs: Runs) -> None:
    name = "reco-origin"
    spec = spec_for(runs.uri)
    for run_id in (runs.best, runs.other, runs.full):
        register(run_id, name, spec=spec)
    client = _client(runs)
    best, other, plain = (client.get_model_version(name, v).tags for v in ("1", "2", "3"))
    for tags, run_id in ((best, runs.best), (other, runs.other), (plain, runs.full)):
        recorded = client.get_run(run_id).data.tags["replayml.overrides"]
        assert tags["replayml.overrides"] == recorded  # redacted as the run recorded them
    assert "model.num_leaves=" in best["replayml.overrides"]
    for tags in (best, other):
        assert tags["replayml.sweep_id"] == runs.sweep_id
        assert tags["replayml.sweep.objective"] == "test_auc"
        assert tags["replayml.sweep.objective_direction"] == "max"
    assert best["replayml.sweep.best"] == "true" and other["replayml.sweep.best"] == "false"
    assert not any(k.startswith("replayml.sweep") for k in plain)

    table = _cli(runs, "models", name)
    assert table.exit_code == 0, table.output
    lines = [ln for ln in table.stdout.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    origin = {
        cells[0]: cells[head.index("origin")]
        for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:])
    }
    leaves = " ".join(json.loads(best["replayml.overrides"]))
    assert origin["1"] == (
        f"sweep {runs.sweep_id}: best child by test_auc (max); overrides: {leaves}"
    )
    assert origin["2"].startswith(f"sweep {runs.sweep_id}: not its best child by test_auc")
    assert origin["3"] == "overrides: " + " ".join(json.loads(plain["replayml.overrides"]))

    # a version registered before these tags were copied: read from its run
    for key in [k for k in best if k.startswith(("replayml.sweep", "replayml.overrides"))]:
        client.delete_model_version_tag(name, "1", key)
    row = next(r for r in model_rows(name, spec=spec) if r.version == "1")
    assert row.origin_lines() == [
        f"sweep {runs.sweep_id}: best child by test_auc (max)",
        f"overrides: {leaves}",
    ]


def test_promote_sets_the_ab_label_and_group(runs: Runs) -> None:
    name = "reco-ab"
    spec = spec_for(runs.uri)
    register(runs.full, name, spec=spec, alias="prod")
    register(runs.best, name, spec=spec, ab_label="treatment", ab_group="2026-12-homepage")
    client = _client(runs)

    half = _cli(runs, "promote", name, "2", "--alias", "prod", "--ab-label", "control")
    assert half.exit_code == 2 and "--ab-label 'control' without --ab-group" in half.stderr
    stale = _cli(
        runs, "promote", name, "2", "--alias", "prod", "--expect-version", "2",
        "--ab-label", "control", "--ab-group", "2027-01-homepage",
    )  # fmt: skip
    assert stale.exit_code != 0
    for refused in (half, stale):  # nothing changed: neither the alias nor the labels
        tags = client.get_model_version(name, "2").tags
        assert tags["replayml.ab_label"] == "treatment", refused.output
        assert str(client.get_model_version_by_alias(name, "prod").version) == "1"

    done = _cli(
        runs, "promote", name, "2", "--alias", "prod", "--expect-version", "1",
        "--ab-label", "control", "--ab-group", "2027-01-homepage",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert f"{name}@prod: version 1 -> 2" in done.stdout
    assert (
        f"{name} version 2: A/B treatment (2026-12-homepage) -> control (2027-01-homepage)"
        in done.stdout
    )
    tags = client.get_model_version(name, "2").tags
    assert tags["replayml.ab_label"] == "control"
    assert tags["replayml.ab_group"] == "2027-01-homepage"
    (audit,) = [v for k, v in tags.items() if k.startswith("replayml.ab.audit.")]
    assert audit.startswith(f"promote {name}@prod set A/B of version 2: treatment")
    assert " by alice at " in audit
    (row,) = [r for r in model_rows(name, spec=spec) if r.version == "2"]
    assert (row.aliases, row.ab_label, row.ab_group) == (("prod",), "control", "2027-01-homepage")


def test_the_best_child_of_a_sweep_that_did_not_finish_every_job_is_said_so() -> None:
    from replayml.registry import ModelRow, sweep_tags

    child = {"replayml.sweep_id": "s1", "mlflow.parentRunId": "p" * 32}
    done = {"replayml.sweep.best_run_id": "a" * 32, "replayml.sweep.objective": "test_auc",
            "replayml.sweep.failed": "0", "replayml.sweep.never_ran": "[]"}  # fmt: skip
    assert "replayml.sweep.complete" not in sweep_tags("a" * 32, child, done)
    stopped = {**done, "replayml.sweep.killed": "1"}
    tags = sweep_tags("a" * 32, child, stopped)
    assert tags["replayml.sweep.complete"] == "false" and tags["replayml.sweep.best"] == "true"
    row = ModelRow("1", "", (), "", "", "a" * 32, "",
                   sweep={k.removeprefix("replayml."): v for k, v in tags.items()})  # fmt: skip
    assert row.origin_lines() == [
        "sweep s1: best child by test_auc, of the jobs that finished (some failed, were "
        "stopped or never ran)"
    ]
