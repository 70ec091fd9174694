"""The ranker optimises what it is judged on, and is never judged against another model kind
on metrics pooled across user-days (its scores compare only within a user-day)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import all_runs, compose_cfg, run_train_py, train
from replayml.cli import app
from replayml.errors import ReplaymlError
from replayml.review import review
from server_fixtures import spec_for

pytestmark = pytest.mark.slow


def test_the_ranker_trains_on_the_contact_label_unless_clicks_are_graded(project: Path) -> None:
    from replayml.model.fit import Split, fit, tree_hash
    from replayml.pipeline import prepare
    from replayml.progress import Steps

    cfg = compose_cfg(project, ["model=lgbm_ranker", "model.num_boost_round=15"])
    assert cfg.model.click_grade == 0
    _, _, _, m = prepare(cfg, project, Steps(enabled=False))
    assert (m.train.grades == 1).any()  # the data has clicks without a contact to grade

    def on_label(split: Split) -> Split:
        return dataclasses.replace(split, grades=split.y.astype("int32"))

    graded = dataclasses.replace(cfg.model, click_grade=1)
    default = tree_hash(fit(m.train, m.valid, cfg.model).booster)
    # the default ranker's trees are those of a ranker given the 0/1 label as its grades
    assert default == tree_hash(fit(on_label(m.train), on_label(m.valid), graded).booster)
    assert default != tree_hash(fit(m.train, m.valid, graded).booster)


@pytest.mark.parametrize("value", ["2", "-1"])
def test_a_click_grade_out_of_range_is_refused_before_any_run(project: Path, value: str) -> None:
    proc = run_train_py(project, "model=lgbm_ranker", f"model.click_grade={value}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"model.click_grade={value} is not valid: use model.click_grade=0" in proc.stderr
    assert "model.click_grade=1" in proc.stderr and "Traceback" not in proc.stderr
    assert all_runs(project) == []


def test_graded_clicks_without_a_click_column_are_refused_before_any_run(project: Path) -> None:
    proc = run_train_py(
        project, "model=lgbm_ranker", "model.click_grade=1", "data.events.click=null",
        "features=minimal",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "model.click_grade=1 grades clicks, but the data maps no click column" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all_runs(project) == []


@pytest.fixture(scope="module")
def kinds_store(template_project: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A classifier and a ranker trained on the same rows, in one local store."""
    root = tmp_path_factory.mktemp("kinds") / "proj"
    shutil.copytree(template_project, root, symlinks=True)
    base = train(root, ["tracking.run_name=classifier"]).run_id
    ranker = train(root, ["model=lgbm_ranker", "tracking.run_name=ranker"]).run_id
    return root, f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", base, ranker


def _row(markdown: str, metric: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == metric:
            return cells
    raise AssertionError(f"no row {metric} in:\n{markdown}")


def test_a_ranker_against_a_classifier_is_not_judged_on_pooled_metrics(kinds_store) -> None:  # noqa: ANN001
    root, uri, base, ranker = kinds_store
    spec = spec_for(uri, root)
    for run, baseline in ((ranker, base), (base, ranker)):
        r = review(run, baseline=baseline, spec=spec, resamples=0)
        assert r.comparable
        for metric in ("test_auc", "test_avg_precision", "test_logloss"):
            assert _row(r.markdown, metric)[-1] == (
                "n/a: ranker scores compare only within a user-day"
            )
            assert metric not in r.regressions
            with pytest.raises(ReplaymlError, match=f"{metric} regressed: ranker scores .*"
                               "--fail-on test_ndcg_at_10"):  # fmt: skip
                r.regressed(metric)
        assert "test_auc, test_avg_precision, pooled across user-days, is not judged" in (
            r.markdown
        )
        ndcg = r.metric("test_ndcg_at_10")
        assert r.regressed("test_ndcg_at_10") == (ndcg.run < ndcg.baseline)  # type: ignore[operator]
        assert _row(r.markdown, "test_ndcg_at_10")[-1] != "n/a"

    def cli(*args: str):  # noqa: ANN202
        return CliRunner().invoke(
            app, ["review", *args, "--tracking-uri", uri, "--bootstrap", "0"],
            catch_exceptions=False,
        )  # fmt: skip

    refused = cli(ranker, "--baseline", base, "--fail-on", "test_auc")
    assert refused.exit_code == 2, refused.output
    assert "cannot judge whether test_auc regressed" in refused.stderr
    assert "--fail-on test_ndcg_at_10" in refused.stderr
    judged = cli(ranker, "--baseline", base, "--fail-on", "test_ndcg_at_10")
    assert judged.exit_code in (0, 1), judged.output
    # against the registered model a ranker may replace: the same rule
    from replayml.registry import register

    register(base, "reco-fair", spec=spec, alias="prod")
    registered = cli(ranker, "--name", "reco-fair", "--fail-on", "test_avg_precision")
    assert registered.exit_code == 2, registered.output
    assert "cannot judge whether test_avg_precision regressed" in registered.stderr


def test_two_classifiers_are_still_judged_on_pooled_metrics(kinds_store) -> None:  # noqa: ANN001
    root, uri, base, _ = kinds_store
    r = review(base, baseline=base, spec=spec_for(uri, root), resamples=0)
    assert r.unjudged == {} and r.regressed("test_auc") is False


@pytest.mark.parametrize(
    ("grid", "objective", "fix"),
    [
        (["model=lgbm,lgbm_ranker"], "test_auc", "tracking.objective=valid_best_ndcg_at_10"),
        (["model=lgbm_ranker,lgbm", "tracking.objective=valid_best_auc"], "valid_best_auc",
         "tracking.objective=valid_best_ndcg_at_10 (keeps the test window unseen)"),
        (["model=lgbm,lgbm_ranker", "tracking.objective=test_avg_precision"],
         "test_avg_precision", "tracking.objective=valid_best_ndcg_at_10"),
        (["model=popularity,lgbm_ranker"], "test_auc", "tracking.objective=test_ndcg_at_10"),
    ],
)  # fmt: skip
def test_a_sweep_mixing_the_ranker_with_another_kind_on_a_pooled_objective_is_refused(
    project: Path, grid: list[str], objective: str, fix: str
) -> None:
    proc = run_train_py(project, "-m", "dates=last_7d", "model.num_boost_round=5", *grid)
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = f"tracking.objective={objective} pools every row across user-days"
    assert said in proc.stderr, proc.stderr[-3000:]
    assert fix in proc.stderr and "Traceback" not in proc.stderr
    assert all_runs(project) == []  # no parent, no child


def test_a_ranker_recorded_before_click_grade_is_compared_as_trained_on_grades() -> None:
    from replayml.review import _as_trained

    old = {"model.kind": "lgbm_ranker", "model.num_leaves": "31"}
    assert _as_trained(old)["model.click_grade"] == "1"  # what it trained on: grades
    new = {"model.kind": "lgbm_ranker", "model.click_grade": "0"}
    assert _as_trained(new) == new
    assert "model.click_grade" not in _as_trained({"model.kind": "lgbm"})
