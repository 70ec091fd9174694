"""Training under the determinism profile: early stopping follows the validation window."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from replayml.config.schema import ModelConfig
from replayml.model.fit import TRAIN_CURVE_ROWS, Split, fit


def _split(rng: np.random.Generator, n: int) -> Split:
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"f{i}" for i in range(6)])
    signal = X["f0"] - 0.5 * X["f1"]
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal - 2.0)))).astype("int8")
    groups = np.arange(n) // 10
    return Split(X=X, y=y, groups=groups, grades=y.astype("int32") * 2)


def test_early_stopping_follows_the_validation_loss_not_the_training_curve() -> None:
    rng = np.random.default_rng(7)
    train, valid = _split(rng, 60_000), _split(rng, 5_000)
    cfg = ModelConfig(
        learning_rate=0.3, num_leaves=63, min_data_in_leaf=5, num_boost_round=300,
        early_stopping_rounds=10, num_threads=1,
    )  # fmt: skip  # a quickly overfitting model
    result = fit(train, valid, cfg)
    valid_loss = result.curves["valid_logloss"]
    train_loss = result.curves["train_logloss"]
    assert result.best_iteration < cfg.num_boost_round  # it did stop early
    assert len(valid_loss) == result.best_iteration + cfg.early_stopping_rounds
    assert result.best_iteration == int(np.argmin(valid_loss)) + 1
    # the training curve (a fixed prefix of the training rows) kept improving meanwhile
    assert train_loss[-1] < train_loss[result.best_iteration - 1]
    assert len(train_loss) == len(valid_loss) and len(train.y) > TRAIN_CURVE_ROWS


def test_training_reports_its_iterations_without_changing_the_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from replayml.model.fit import tree_hash
    from replayml.progress import Steps

    rng = np.random.default_rng(3)
    train, valid = _split(rng, 5_000), _split(rng, 2_000)
    cfg = ModelConfig(num_boost_round=12, early_stopping_rounds=100, num_threads=1)
    quiet = fit(train, valid, cfg)
    steps = Steps(enabled=False, note_every=0.0)  # not a terminal: log lines, here every one
    with caplog.at_level(logging.INFO, logger="replayml.progress"), steps.step("training"):
        told = fit(train, valid, cfg, progress=steps.note)
    lines = [r.getMessage() for r in caplog.records if "iteration" in r.getMessage()]
    assert len(lines) == 12
    assert lines[0].startswith("training: iteration 1 of at most 12 (valid logloss 0.")
    assert (
        lines[-1].startswith("training: iteration 12 of at most 12") and "valid auc" in lines[-1]
    )
    assert tree_hash(told.booster) == tree_hash(quiet.booster) and told.curves == quiet.curves
    steps.note("after the step")  # outside a step: nothing to tell
    assert "after the step" not in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "unset")],
)
def test_openmp_threads_spin_briefly_unless_the_user_says_otherwise(
    env: dict[str, str], expected: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    proc = subprocess.run(
        [sys.executable, "-c",
         "import os, replayml, lightgbm; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"],
        env={**clean, **env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == expected
