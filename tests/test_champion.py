"""A champion scored on a run's own test window (`tracking.champion`): a daily retrain and
yesterday's model compared on the same rows, in a real project with a real MLflow store."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from conftest import all_runs, mlflow_client, run_train_py, train
from replayml.registry import promote, register
from replayml.replay import Verdict, replay
from server_fixtures import spec_for

pytestmark = pytest.mark.slow

FAST = ["model.num_boost_round=20"]


@dataclass(frozen=True)
class Daily:
    root: Path
    uri: str
    yesterday: str  # trained with the windows ending a day earlier, registered as reco@prod
    today: str  # the default windows, scoring reco@prod on its test day
    twin: str  # yesterday's config and windows again, with reco@prod as its champion


@pytest.fixture(scope="module")
def daily(template_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Daily:
    root = tmp_path_factory.mktemp("champion") / "proj"
    shutil.copytree(template_project, root, symlinks=True)
    first = train(root, FAST)
    last = date.fromisoformat(mlflow_client(root).get_run(first.run_id).data.tags[
        "replayml.dates.test_end"])  # fmt: skip
    anchor = f"dates.anchor={last - timedelta(days=1)}"
    yesterday = train(root, [*FAST, anchor]).run_id
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    register(yesterday, "reco", spec=spec_for(uri), alias="prod", project=root)
    today = train(root, [*FAST, "tracking.champion=models:/reco@prod"]).run_id
    twin = train(root, [*FAST, anchor, "tracking.champion=models:/reco@prod"]).run_id
    return Daily(root, uri, yesterday, today, twin)


def test_the_champion_is_scored_on_the_runs_own_test_rows(daily: Daily) -> None:
    client = mlflow_client(daily.root)
    today = client.get_run(daily.today)
    metrics, tags = today.data.metrics, today.data.tags
    assert tags["replayml.champion.uri"] == "models:/reco/1"  # pinned, not the alias
    assert tags["replayml.champion.run_id"] == daily.yesterday
    assert tags["replayml.champion.feature_code"] == "same"
    assert {"champion_auc", "champion_ndcg_at_10", "champion_logloss"} <= set(metrics)
    assert metrics["champion_auc"] != metrics["test_auc"]  # another model, same rows
    # the champion's own scores on its own test window are what its run recorded: the same
    # model on the same rows gives the same numbers, to the last digit
    twin = client.get_run(daily.twin).data.metrics
    own = client.get_run(daily.yesterday).data.metrics
    for name in ("auc", "avg_precision", "logloss", "ndcg_at_10", "recall_at_10"):
        assert twin[f"champion_{name}"] == own[f"test_{name}"]
    # the recorded config pins the version: a replay after the alias moved scores the same one
    config = client.download_artifacts(daily.today, "replayml/config.yaml")
    assert "champion: models:/reco/1" in Path(config).read_text()


def test_a_replay_scores_the_pinned_champion_after_the_alias_moved(daily: Daily) -> None:
    spec = spec_for(daily.uri)
    register(daily.today, "reco", spec=spec, project=daily.root)
    promote("reco", "2", "prod", spec=spec)
    report = replay(daily.today, project=daily.root)
    assert report.verdict is Verdict.IDENTICAL, [
        f"{d.group} {d.key}: {d.original} -> {d.replay}" for d in report.differences
    ]


def test_a_champion_that_cannot_be_compared_is_refused_before_any_run(daily: Daily) -> None:
    before = len(all_runs(daily.root))
    cases = {
        "features=minimal": "was trained with other features config",
        "model=lgbm_ranker": "is a model=lgbm run and this run trains model=lgbm_ranker",
    }
    for override, said in cases.items():
        proc = run_train_py(daily.root, *FAST, override, "tracking.champion=models:/reco/1")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "tracking.champion=models:/reco/1: " in proc.stderr
        assert said in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    last = date.fromisoformat(
        mlflow_client(daily.root).get_run(daily.today).data.tags["replayml.dates.test_end"]
    )
    seen = run_train_py(  # version 1 early-stopped on that day: its scores there are in-sample
        daily.root, *FAST, f"dates.anchor={last - timedelta(days=2)}",
        "tracking.champion=models:/reco/1",
    )  # fmt: skip
    assert seen.returncode == 2, seen.stderr[-2000:]
    assert "saw this run's test window" in seen.stderr and "its validation window" in seen.stderr
    typo = run_train_py(daily.root, *FAST, "tracking.champion=reco@prod")
    assert typo.returncode == 2
    assert "tracking.champion=reco@prod: name a registered version as" in typo.stderr
    missing = run_train_py(daily.root, *FAST, "tracking.champion=models:/reco@canary")
    assert missing.returncode == 2
    assert "no version of 'reco' holds alias 'canary'" in missing.stderr, missing.stderr[-2000:]
    assert len(all_runs(daily.root)) == before


def test_the_review_against_the_champion_compares_on_the_same_rows(daily: Daily) -> None:
    from replayml.review import review

    spec = spec_for(daily.uri)
    today = mlflow_client(daily.root).get_run(daily.today).data.metrics
    judged = review(daily.today, daily.yesterday, spec=spec, resamples=200)
    rows = {r.name: r for r in judged.metrics}
    assert rows["test_auc"].baseline == today["champion_auc"]
    assert rows["test_ndcg_at_10"].baseline == today["champion_ndcg_at_10"]
    assert {"test_auc", "test_ndcg_at_10"} <= set(judged.intervals)  # paired, same rows
    assert "n/a (other test rows)" not in judged.markdown
    assert "scored on this run's own test rows" in judged.markdown
    # a run without the baseline as its champion is still not compared across test windows
    other = review(daily.yesterday, daily.today, spec=spec, resamples=200)
    assert not other.intervals and "n/a (other test rows)" in other.markdown
    # and says what does compare a daily retrain with the model it may replace
    assert "the test windows differ" in other.markdown
    assert "tracking.champion=models:/NAME@ALIAS" in other.markdown


def test_a_sweep_scores_one_champion_version_in_every_job(daily: Daily) -> None:
    proc = run_train_py(
        daily.root, "-m", *FAST, "model.learning_rate=0.04,0.06",
        "tracking.champion=models:/reco@prod",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow_client(daily.root)
    exps = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(exps, "tags.`replayml.sweep.role` = 'child'")
    assert len(children) == 2
    held = client.get_model_version_by_alias("reco", "prod").version
    assert {c.data.tags["replayml.champion.uri"] for c in children} == {f"models:/reco/{held}"}


def test_a_replay_scores_the_champion_after_its_version_was_deleted(daily: Daily) -> None:
    """Last in this module: it deletes the version `today` pinned."""
    mlflow_client(daily.root).delete_model_version("reco", "1")
    report = replay(daily.today, project=daily.root)
    assert report.verdict is Verdict.IDENTICAL, [
        f"{d.group} {d.key}: {d.original} -> {d.replay}" for d in report.differences
    ]
    said = [w for w in report.warnings if w.startswith("champion:")]
    assert said and "models:/reco/1 no longer resolves" in said[0], report.warnings
    assert daily.yesterday in said[0]
    replayed = mlflow_client(daily.root).get_run(report.replay_run_id).data
    assert replayed.tags["replayml.champion.run_id"] == daily.yesterday
    assert "champion_auc" in replayed.metrics
