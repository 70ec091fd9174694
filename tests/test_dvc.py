"""`dvc repro` and `dvc exp run -S` give the same results as `python train.py`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, all_runs, git, mlflow_client, run_train_py

pytestmark = pytest.mark.slow


@pytest.fixture
def dvc_project(project: Path) -> Path:
    """The project with the pipeline files and replayml's code committed (the stages' deps)."""
    from replayml.config.compose import params_yaml

    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "dvc.yaml", project / "dvc.yaml")
    # composed from the project's conf/ (its default dataset is the generated test data)
    (project / "params.yaml").write_text(params_yaml(project / "conf", []))
    subprocess.run(
        [sys.executable, "-m", "dvc", "config", "hydra.enabled", "true"], cwd=project, check=True
    )
    git(project, "add", "-A")
    git(project, "commit", "-qm", "pipeline")
    return project


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
        env=env, check=False, timeout=600,
    )  # fmt: skip


def _result(run) -> tuple[str, str, dict[str, float]]:  # noqa: ANN001
    t = run.data.tags
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(("test_", "baseline_"))}
    return t["replayml.tree_hash"], t["replayml.prediction_hash"], metrics


def test_repro_equals_train_py_and_noop_repro_does_nothing(dvc_project: Path) -> None:
    repro = _dvc(dvc_project, "repro")
    assert repro.returncode == 0, repro.stderr[-3000:] + repro.stdout[-3000:]
    direct = run_train_py(dvc_project)
    assert direct.returncode == 0, direct.stderr[-2000:]
    runs = all_runs(dvc_project)
    assert len(runs) == 2
    by_cache = {bool(r.data.tags.get("replayml.features_cache")): r for r in runs}
    assert _result(by_cache[True]) == _result(by_cache[False])
    # DVC deletes a stage's outputs before running it: not an uncommitted change of the code
    assert by_cache[True].data.tags["replayml.code.dirty"] == "false"
    assert (
        by_cache[True].data.tags["replayml.slice_hash.train"]
        == by_cache[False].data.tags["replayml.slice_hash.train"]
    )
    metrics = json.loads((dvc_project / "artifacts" / "train" / "metrics.json").read_text())
    assert metrics["test_auc"] == by_cache[True].data.metrics["test_auc"]
    again = _dvc(dvc_project, "repro")
    assert again.returncode == 0
    assert "didn't change, skipping" in again.stdout
    assert len(all_runs(dvc_project)) == 2  # no new run


def test_exp_run_set_param_reaches_the_run(dvc_project: Path) -> None:
    proc = _dvc(dvc_project, "exp", "run", "-S", "model.learning_rate=0.1", "-S",
                "model.num_boost_round=40")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (run,) = all_runs(dvc_project)
    assert run.data.params["model.learning_rate"] == "0.1"
    assert run.data.params["model.num_boost_round"] == "40"
    assert run.data.tags["replayml.dvc.exp_name"]
    assert run.info.run_name == run.data.tags["replayml.dvc.exp_name"]  # found in the UI by it
    # which -S values made it, as differences of params.yaml from conf/'s composition
    assert run.data.tags["replayml.dvc.params_changes"] == (
        "model.learning_rate=0.1 model.num_boost_round=40"
    )
    shown = _dvc(dvc_project, "exp", "show", "--md")
    assert "test_auc" in shown.stdout


def test_exp_run_in_a_temporary_workspace_records_into_the_projects_store(
    dvc_project: Path,
) -> None:
    from replayml.replay import Verdict, replay

    # `--temp` (and queued experiments) run in a throwaway copy under .dvc/tmp/exps/
    proc = _dvc(dvc_project, "exp", "run", "--temp", "-S", "model.learning_rate=0.1", "-S",
                "model.num_boost_round=40")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (run,) = all_runs(dvc_project)
    assert run.data.params["model.learning_rate"] == "0.1"
    assert not list((dvc_project / ".dvc" / "tmp").rglob("mlflow.db"))
    report = replay(run.info.run_id, project=dvc_project)
    assert report.verdict is Verdict.IDENTICAL, [*report.warnings, *report.not_replayable]


def test_exp_run_validates_against_our_schema(dvc_project: Path) -> None:
    proc = _dvc(dvc_project, "exp", "run", "-S", "model.lerning_rate=0.1")
    assert proc.returncode != 0
    assert "lerning_rate" in proc.stderr + proc.stdout
    assert all_runs(dvc_project) == []


def test_altered_feature_cache_is_refused(dvc_project: Path) -> None:
    assert _dvc(dvc_project, "repro", "features").returncode == 0
    cache = dvc_project / "artifacts" / "features" / "train.parquet"
    frame = pd.read_parquet(cache)
    cache.unlink()
    frame.iloc[::-1].to_parquet(cache, index=False)  # same rows, another order
    proc = run_train_py(
        dvc_project, "--config-dir", ".", "--config-name", "params", "hydra.output_subdir=null",
        "features_dir=artifacts/features",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "does not match the content hash" in proc.stderr
    assert all_runs(dvc_project) == []
    # a cache built by other feature code (e.g. a builder changed since) is not this code's
    cache.unlink()
    frame.to_parquet(cache, index=False)
    meta_path = dvc_project / "artifacts" / "features" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "code_hash": "0" * 64}))
    proc = run_train_py(
        dvc_project, "--config-dir", ".", "--config-name", "params", "hydra.output_subdir=null",
        "features_dir=artifacts/features",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "were built by other replayml code" in proc.stderr
    assert all_runs(dvc_project) == []


def _exp_show(root: Path) -> list[dict]:
    """`dvc exp show --json`: the baseline commit, then its experiments (newest first)."""
    shown = _dvc(root, "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr[-3000:]
    (baseline,) = [rev for rev in json.loads(shown.stdout) if rev["rev"] != "workspace"]
    return [baseline] + [r for exp in baseline.get("experiments") or [] for r in exp["revs"]]


def test_committed_metrics_are_readable_for_the_baseline_and_experiments(
    dvc_project: Path,
) -> None:
    repro = _dvc(dvc_project, "repro")
    assert repro.returncode == 0, repro.stderr[-3000:] + repro.stdout[-3000:]
    git(dvc_project, "add", "-A")
    git(dvc_project, "commit", "-qm", "baseline results")
    tracked = git(dvc_project, "ls-files", "artifacts").split()
    assert sorted(tracked) == [
        "artifacts/train/metrics.json",
        "artifacts/train/plots/feature_importance.png",
        "artifacts/train/plots/learning_curve.csv",
        "artifacts/train/plots/pr_curve.csv",
    ]  # the `cache: false` outputs; the model and features stay in the DVC cache
    exp = _dvc(dvc_project, "exp", "run", "-S", "model.learning_rate=0.1")
    assert exp.returncode == 0, exp.stderr[-3000:] + exp.stdout[-3000:]
    revs = _exp_show(dvc_project)
    assert len(revs) == 2
    auc = {}
    for rev in revs:
        assert not rev.get("error"), rev
        metrics = rev["data"]["metrics"]["artifacts/train/metrics.json"]
        assert not metrics.get("error"), metrics
        auc[rev["name"] or rev["rev"]] = metrics["data"]["test_auc"]
    assert len(set(auc.values())) == 2, auc  # each revision's own result, not the workspace's
    diff = _dvc(dvc_project, "metrics", "diff", "--json")
    assert diff.returncode == 0, diff.stderr[-3000:]
    assert "failed to load" not in diff.stderr
    assert "test_auc" in json.loads(diff.stdout)["artifacts/train/metrics.json"]


def test_a_dataset_in_its_own_folder_invalidates_the_features_stage(dvc_project: Path) -> None:
    shutil.copytree(dvc_project / "data", dvc_project / "shop_data")
    shop = (dvc_project / "conf" / "data" / "marketplace.yaml").read_text()
    shop = shop.replace("name: marketplace", "name: shop").replace("root: data", "root: shop_data")
    shop = shop.replace("dvc_file: data.dvc", "dvc_file: shop_data.dvc")
    (dvc_project / "conf" / "data" / "shop.yaml").write_text(shop)
    assert _dvc(dvc_project, "add", "-q", "shop_data").returncode == 0
    git(dvc_project, "add", "-A")
    git(dvc_project, "commit", "-qm", "shop data in its own folder")

    first = _dvc(dvc_project, "exp", "run", "features", "-S", "data=shop")
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    lock = (dvc_project / "dvc.lock").read_text()
    assert "- path: shop_data\n" in lock and "- path: data\n" not in lock
    unchanged = _dvc(dvc_project, "exp", "run", "features", "-S", "data=shop")
    assert "Stage 'features' didn't change, skipping" in unchanged.stdout, unchanged.stdout

    first_day = sorted((dvc_project / "shop_data" / "events").iterdir())[0]
    shutil.rmtree(first_day)  # the new version of the shop's data
    assert _dvc(dvc_project, "add", "-q", "shop_data").returncode == 0
    again = _dvc(dvc_project, "exp", "run", "features", "-S", "data=shop")
    assert again.returncode == 0, again.stderr[-3000:] + again.stdout[-3000:]
    assert "Running stage 'features'" in again.stdout, again.stdout


def test_repro_refuses_a_params_yaml_that_conf_no_longer_composes(dvc_project: Path) -> None:
    lgbm = dvc_project / "conf" / "model" / "lgbm.yaml"
    lgbm.write_text(lgbm.read_text().replace("learning_rate: 0.05", "learning_rate: 0.07"))
    git(dvc_project, "commit", "-qam", "faster learning")
    stale = _dvc(dvc_project, "repro")
    assert stale.returncode != 0
    assert (
        "params.yaml is stale: model.learning_rate: 0.05 in params.yaml, 0.07 from conf/"
        in stale.stderr
    ), stale.stderr[-3000:]
    assert "make params" in stale.stderr and all_runs(dvc_project) == []
    fresh = subprocess.run(
        [sys.executable, "-m", "replayml", "params"], cwd=dvc_project, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    (dvc_project / "params.yaml").write_text(fresh.stdout)
    repro = _dvc(dvc_project, "repro")
    assert repro.returncode == 0, repro.stderr[-3000:]
    (run,) = all_runs(dvc_project)
    assert run.data.params["model.learning_rate"] == "0.07"


def test_repro_refuses_a_hand_edited_params_yaml_also_when_features_are_cached(
    dvc_project: Path,
) -> None:
    first = _dvc(dvc_project, "repro")
    assert first.returncode == 0, first.stderr[-3000:]
    git(dvc_project, "add", "-A")
    git(dvc_project, "commit", "-qm", "reproduced")
    metrics = dvc_project / "artifacts" / "train" / "metrics.json"
    committed = metrics.read_text()
    params = dvc_project / "params.yaml"
    params.write_text(params.read_text().replace("learning_rate: 0.05", "learning_rate: 0.2"))
    edited = _dvc(dvc_project, "repro")  # the features stage is up to date: only train runs
    assert edited.returncode != 0
    assert (
        "params.yaml is stale: model.learning_rate: 0.2 in params.yaml, 0.05 from conf/"
        in edited.stderr
    ), edited.stderr[-3000:]
    assert len(all_runs(dvc_project)) == 1  # nothing trained from the edited file
    # DVC removed the stage's outputs before its command refused: the advised commands
    # bring back the committed ones
    assert not metrics.exists()
    advice = re.search(r"`(git checkout -- artifacts) && (dvc checkout)`", edited.stderr)
    assert advice, edited.stderr[-3000:]
    git(dvc_project, *advice[1].split()[1:])
    assert _dvc(dvc_project, *advice[2].split()[1:]).returncode == 0
    assert metrics.read_text() == committed
    assert (dvc_project / "artifacts" / "train" / "model.txt").is_file()


def test_exp_run_set_on_tracking_reruns_and_on_a_stage_key_is_refused(dvc_project: Path) -> None:
    fast = ["-S", "model.num_boost_round=10"]
    assert _dvc(dvc_project, "exp", "run", *fast).returncode == 0
    moved = _dvc(dvc_project, "exp", "run", *fast, "-S", "tracking.experiment=elsewhere")
    assert moved.returncode == 0, moved.stderr[-3000:]
    client = mlflow_client(dvc_project)
    elsewhere = client.get_experiment_by_name("elsewhere")
    assert elsewhere is not None, "the -S tracking value was ignored"
    assert len(client.search_runs([elsewhere.experiment_id])) == 1
    before = len(all_runs(dvc_project))
    owned = _dvc(dvc_project, "exp", "run", *fast, "-S", "output_dir=somewhere")
    assert owned.returncode != 0
    assert "output_dir=somewhere: the DVC stages set output_dir" in owned.stderr + owned.stdout
    assert len(all_runs(dvc_project)) == before


def test_the_committed_dvc_lock_matches_the_code() -> None:
    # a stale lock makes `dvc repro` on a fresh clone retrain and dirty the tree; a new
    # dataset's conf/data/*.yaml (bring your own data) changes the `conf` dependency without
    # changing the pipeline's params, so conf/ alone is not checked
    status = _dvc(REPO, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    code = ("src/", "train.py", "dvc.yaml", "params.yaml")
    stale = {
        stage: sorted(dep for dep in change.get("changed deps", {}) if dep.startswith(code))
        for stage, changes in json.loads(status.stdout or "{}").items()
        for change in changes
        if isinstance(change, dict)
    }
    stale = {stage: deps for stage, deps in stale.items() if deps}
    assert not stale, f"dvc.lock is stale for {stale}: run `dvc repro` and commit dvc.lock"


def test_a_queued_experiment_trains_its_own_snapshot_of_the_code(dvc_project: Path) -> None:
    # the queue exists so that the workspace can be edited while it runs: each queued
    # experiment must run the code it was queued with, not the workspace's (here the
    # workspace's src/ comes first on PYTHONPATH, as an editable install of it would)
    remote = dvc_project.parent / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(dvc_project, "remote", "add", "origin", str(remote))
    git(dvc_project, "push", "-q", "origin", "HEAD:refs/heads/main")
    queued = _dvc(dvc_project, "exp", "run", "--queue", "-S", "model.num_boost_round=40")
    assert queued.returncode == 0, queued.stderr[-3000:]
    fit = dvc_project / "src" / "replayml" / "model" / "fit.py"
    fit.write_text(fit.read_text() + "\nWORKSPACE_EDIT = True\n")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(dvc_project / "src"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", "--run-all"], cwd=dvc_project,
        capture_output=True, text=True, env=env, check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (run,) = all_runs(dvc_project)
    tags = run.data.tags
    assert run.data.params["model.num_boost_round"] == "40"
    assert tags["replayml.replayable"] == "true", tags.get("replayml.not_replayable_reasons")
    assert tags["replayml.code.package_in_project"] == "true"
    # its copy of the project has no remote-tracking branches; the project it came from has
    assert tags["replayml.code.on_remote"] == "true"
    if tags["replayml.code.dirty"] == "true":  # the experiment's own params.yaml, no more
        diff = mlflow_client(dvc_project).download_artifacts(run.info.run_id, "replayml/code.diff")
        assert "WORKSPACE_EDIT" not in Path(diff).read_text()


def _advice_after_another_data_dvc() -> list[str]:
    """The DVC commands README advises when `git pull` brings another `data.dvc`."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("brings another `data.dvc`")
    advice = readme[start : readme.index("before anything else", start)]
    return re.findall(r"`(dvc [^`]*)`", advice)


def test_readme_advice_after_another_data_dvc_works_in_a_clone_that_never_ran_repro(
    dvc_project: Path, tmp_path: Path
) -> None:
    """The committed dvc.lock names a model and features this clone's cache never held: the
    advised commands restore the new data all the same."""
    from replayml.data.prepare import GeneratorSpec, new_version, prepare
    from replayml.lineage.data import read_dvc_file, verify_all

    shutil.copy2(REPO / "dvc.lock", dvc_project / "dvc.lock")  # outputs built elsewhere
    _dvc(dvc_project, "remote", "modify", "local", "url", str(tmp_path / "remote"))
    assert _dvc(dvc_project, "push", "data.dvc").returncode == 0
    git(dvc_project, "add", "-A")
    git(dvc_project, "commit", "-qm", "stages built elsewhere; a remote of its own")
    clone = tmp_path / "clone"
    git(dvc_project.parent, "clone", "-q", str(dvc_project), str(clone))
    prepare(clone, GeneratorSpec(), push=False)
    new_version(dvc_project, GeneratorSpec(scale=0.05), push=True)
    git(dvc_project, "commit", "-qam", "a teammate's new data version")
    git(clone, "pull", "-q")
    commands = _advice_after_another_data_dvc()
    assert commands
    for command in commands:
        proc = _dvc(clone, *command.split()[1:])
        assert proc.returncode == 0, f"`{command}`: {proc.stderr[-1000:]}"
    assert (
        verify_all(clone, "data.dvc", "data").dvc_hash
        == read_dvc_file(dvc_project / "data.dvc")[0]
    )
