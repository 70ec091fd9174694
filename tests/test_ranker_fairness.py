"""The ranker optimises what it is judged on, and is never judged against another model kind
on metrics pooled across user-days (its scores compare only within a user-day)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import all_runs, compose_cfg, run_train_py

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
