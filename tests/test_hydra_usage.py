"""Hydra used the way its users know it: quoting, glob sweeps, sweeper params in presets,
`hydra.job.chdir`, logging options, escaped interpolations, and replays of such runs."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import REPO, all_runs, git, run_train_py

FAST = ["model=popularity", "dates=last_7d"]


def _runs(root: Path, role: str | None = None) -> list:
    return [r for r in all_runs(root) if r.data.tags.get("replayml.sweep.role") == role]


@pytest.mark.slow
def test_recorded_command_redacts_whole_arguments_and_pastes_back_into_a_shell(
    project: Path,
) -> None:
    secret = "hunter2 and more"
    proc = run_train_py(project, *FAST, f"+tags.api_token={secret}", "+tags.x=${model.kind}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    command = run.data.tags["replayml.command"]
    assert "and more" not in command
    assert shlex.split(command) == [
        "train.py", *FAST, "+tags.api_token=***REDACTED***", "+tags.x=${model.kind}"
    ]  # fmt: skip
    assert "'+tags.x=${model.kind}'" in command  # quoted: bash would not substitute it
    (lineage,) = (project / "outputs").rglob("lineage.json")
    assert "and more" not in lineage.read_text()


@pytest.mark.slow
def test_a_glob_sweep_has_a_parent_and_a_sweep_that_cannot_be_expanded_runs_nothing(
    project: Path,
) -> None:
    proc = run_train_py(project, "-m", "model=glob(popu*)", "dates=last_7d")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "UserWarning" not in proc.stderr
    (parent,) = _runs(project, "parent")
    (child,) = _runs(project, "child")
    assert parent.info.status == "FINISHED"
    assert child.data.tags["replayml.choice.model"] == "popularity"
    assert "replayml.sweep.never_ran" in parent.data.tags  # summarised

    before = len(all_runs(project))
    for sweep, said in [
        ("model.learning_rate=interval(0.01,0.1)", "cannot run interval()"),
        ("model=glob(xgb*)", "matches no option of the config group `model`"),
    ]:
        proc = run_train_py(project, "-m", *FAST, sweep)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert said in proc.stderr and sweep in proc.stderr
        assert "UserWarning" not in proc.stderr and "Launching" not in proc.stderr
    assert len(all_runs(project)) == before


SWEEPY = """# @package _global_
defaults:
  - override /model: popularity
  - override /dates: last_7d
hydra:
  sweeper:
    params:
      {key}: 3,4
"""


@pytest.mark.slow
def test_sweeper_params_of_a_preset_are_the_sweeps_jobs(project: Path) -> None:
    preset = project / "conf" / "experiment" / "sweepy.yaml"
    preset.write_text(SWEEPY.format(key="dates.train_days"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a preset that sweeps")
    proc = run_train_py(project, "-m", "experiment=sweepy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = _runs(project, "parent")
    children = _runs(project, "child")
    assert parent.info.status == "FINISHED", parent.data.tags
    assert json.loads(parent.data.tags["replayml.sweep.never_ran"]) == []
    assert sorted(c.data.params["dates.train_days"] for c in children) == ["3", "4"]

    preset.write_text(SWEEPY.format(key="dates.train_dayz"))
    before = len(all_runs(project))
    proc = run_train_py(project, "-m", "experiment=sweepy")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "dates.train_dayz" in proc.stderr
    assert len(all_runs(project)) == before


@pytest.fixture
def code_project(project: Path) -> Path:
    """The project with replayml's code committed in `src/` (what a replay checks out)."""
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "replayml's code in the project")
    return project


@pytest.mark.slow
def test_hydra_job_chdir_trains_like_a_run_from_the_project_root_and_replays(
    code_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from replayml.replay import Verdict, replay

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    proc = run_train_py(code_project, *FAST, "hydra.job.chdir=True", "output_dir=outputs/here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(code_project)
    assert run.data.tags["replayml.replayable"] == "true", run.data.tags
    assert run.data.tags["replayml.code.dirty"] == "false"
    assert (code_project / "outputs" / "here" / "lineage.json").is_file()
    report = replay(run.info.run_id, project=code_project)
    assert report.verdict is Verdict.IDENTICAL, (report.differences, report.warnings)


def _written(root: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace")
        for base in ("outputs", "multirun")
        for p in (root / base).rglob("*")
        if p.is_file() and p.suffix in {".log", ".yaml", ".json", ".txt"}
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "logging",
    [
        ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"],
        ["-m", "hydra/job_logging=stdout", "dates.train_days=3,4"],
    ],
)
def test_every_hydra_logging_option_trains_and_keeps_secrets_out_of_the_logs(
    project: Path, logging: list[str]
) -> None:
    secret = "hunter2 and more"
    proc = run_train_py(project, *logging, *FAST, f"+tags.api_token={secret}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run: " in proc.stdout
    for part in ("hunter2", "and more", r"and\ more"):
        assert part not in proc.stdout + proc.stderr + _written(project)
    if "-m" in logging:  # the sweep's jobs and their overrides were logged, scrubbed
        assert "#1 : " in proc.stdout + proc.stderr


@pytest.mark.slow
def test_an_escaped_interpolation_is_kept_and_recorded_literally(project: Path) -> None:
    proc = run_train_py(project, *FAST, r"+tags.note=cost is \${price}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    assert run.data.tags["note"] == "cost is ${price}"  # the text, as Hydra reads it
    assert run.data.params["tags.note"] == "cost is ${price}"
    (config,) = (project / "outputs").rglob("config.yaml")
    assert "note: cost is ${price}" in config.read_text()


FAST_CONFIG = """# a faster default run
defaults:
  - config
  - override model: popularity
  - override dates: last_7d
  - _self_
"""


@pytest.mark.slow
def test_runs_of_a_named_config_and_of_hydra_runtime_values_replay_without_config_warnings(
    code_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from replayml.replay import Verdict, replay

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (code_project / "conf" / "fast.yaml").write_text(FAST_CONFIG)
    git(code_project, "add", "-A")
    git(code_project, "commit", "-qm", "a named config")
    proc = run_train_py(
        code_project,
        "--config-name",
        "fast",
        r"+tags.note=cost is \${price}",
        "+tags.out=${hydra:runtime.output_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(code_project)
    assert run.data.tags["replayml.choice.model"] == "popularity"
    report = replay(run.info.run_id, project=code_project)
    assert report.verdict is Verdict.IDENTICAL, (report.differences, report.warnings)
    assert not [w for w in report.warnings if w.startswith("config")], report.warnings


def _recompose_warnings(root: Path, run_id: str) -> tuple[object, list[str]]:
    from replayml.config.schema import TrackingConfig
    from replayml.replay import _recomposed, _start_recompose, _subprocess_env
    from replayml.tracking.read import RunReader
    from replayml.tracking.store import store_spec

    spec = store_spec(TrackingConfig(), root)
    reader = RunReader(spec)
    started = _start_recompose(reader, reader.run(run_id), root, _subprocess_env(spec.uri, root))
    warnings: list[str] = []
    return _recomposed(started, "0" * 40, warnings), warnings


@pytest.mark.slow
def test_a_config_that_cannot_be_recomposed_says_why_in_one_sentence(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    extra = tmp_path / "extra"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "ext.yaml").write_text("defaults:\n  - popularity\n")
    proc = run_train_py(project, "--config-dir", str(extra), "model=ext", "dates=last_7d")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    found, warnings = _recompose_warnings(project, run.info.run_id)
    assert found is None
    assert warnings == [
        f"config: not recomposed: the run read configs from `--config-dir {extra}`, outside "
        f"its commit, so the recorded config was used"
    ]

    (project / "conf" / "fast.yaml").write_text(FAST_CONFIG)
    proc = run_train_py(project, "--config-name", "fast")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [r for r in all_runs(project) if r.data.tags["replayml.choice.model"] == "popularity"
              and "fast" in r.data.tags["replayml.command"]]  # fmt: skip
    (project / "conf" / "fast.yaml").unlink()  # the named config is gone: the reason says so
    found, warnings = _recompose_warnings(project, run.info.run_id)
    assert found is None
    (warning,) = warnings
    assert "Cannot find primary config 'fast'" in warning, warning
    assert "provider=" not in warning
