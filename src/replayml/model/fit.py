"""Fit and predict LightGBM under the determinism profile. No tracking in here."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from replayml.config.schema import ModelConfig, ModelKind
from replayml.model.evaluate import ranking_metrics

log = logging.getLogger(__name__)

#: rows of the training matrix (a fixed prefix) behind the per-iteration training curves
TRAIN_CURVE_ROWS = 50_000
#: LightGBM's name for the training data; early stopping never stops on a set of this name
TRAIN_DATA_NAME = "training"


@dataclass
class Split:
    """One feature matrix with its labels and (user, day) group ids, row order fixed."""

    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray
    grades: np.ndarray


@dataclass
class FitResult:
    """A trained booster (None for the popularity baseline) and how training went."""

    booster: Any
    best_iteration: int
    curves: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def lgb_params(cfg: ModelConfig) -> dict[str, Any]:
    """LightGBM parameters: the config plus the determinism profile (seeds, layout, threads)."""
    params: dict[str, Any] = {
        "objective": "lambdarank" if cfg.kind is ModelKind.lgbm_ranker else "binary",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": cfg.bagging_freq,
        "lambda_l2": cfg.lambda_l2,
        "max_bin": cfg.max_bin,
        "seed": cfg.seed,
        "deterministic": cfg.deterministic,
        "force_row_wise": True,
        "num_threads": cfg.num_threads,
        "metric": "None",  # validation metrics come from `_feval`: stable across thread counts
        "verbosity": -1,
    }
    if cfg.kind is ModelKind.lgbm_ranker:
        params["lambdarank_truncation_level"] = max(cfg.eval_at * 2, 20)
    return params


def _group_sizes(groups: np.ndarray) -> np.ndarray:
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    return np.diff(np.r_[starts, len(groups)])


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    # one log per row: the probability given to the observed label (y is 0 or 1)
    return float(-np.mean(np.log(np.where(y > 0, p, 1 - p))))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC with tied scores sharing their average rank (so row order does not matter)."""
    npos = y.sum()
    nneg = len(y) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s)  # any order within ties: a run's positives are counted exactly
    ranked = s[order]
    starts = np.r_[0, np.flatnonzero(ranked[1:] != ranked[:-1]) + 1]
    ends = np.r_[starts[1:], len(s)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks are 1-based: starts + 1 .. ends
    positives = np.r_[0.0, np.cumsum(y[order])]  # whole numbers: exact in float64
    pos_per_run = positives[ends] - positives[starts]
    return float(((mean_rank * pos_per_run).sum() - npos * (npos + 1) / 2) / (npos * nneg))


def training_labels(split: Split, cfg: ModelConfig) -> np.ndarray:
    """What LightGBM trains on: the label (0/1), or for a ranker with `model.click_grade=1`
    the grades (a contact 2, a click without a contact 1). Early stopping and every metric
    judge the label."""
    if cfg.kind is ModelKind.lgbm_ranker and cfg.click_grade:
        return split.grades
    return split.y


def fit(
    train: Split,
    valid: Split,
    cfg: ModelConfig,
    progress: Callable[[str], None] | None = None,
) -> FitResult:
    """Train with early stopping on the validation window; curves per iteration.
    `progress` hears after each iteration how far training is (it changes nothing)."""
    if cfg.kind is ModelKind.popularity:
        return FitResult(booster=None, best_iteration=0)
    import lightgbm as lgb

    ranker = cfg.kind is ModelKind.lgbm_ranker
    params = lgb_params(cfg)
    label_train, label_valid = training_labels(train, cfg), training_labels(valid, cfg)
    dtrain = lgb.Dataset(train.X, label=label_train, free_raw_data=True)
    dvalid = lgb.Dataset(valid.X, label=label_valid, reference=dtrain)
    if ranker:
        dtrain.set_group(_group_sizes(train.groups))
        dvalid.set_group(_group_sizes(valid.groups))
    # training curves come from a fixed prefix of the training rows, scored as an extra
    # validation set named like the training data, which early stopping skips by that name
    head = slice(0, min(TRAIN_CURVE_ROWS, len(train.y)))
    dhead = lgb.Dataset(train.X.iloc[head], label=label_train[head], reference=dtrain)
    if ranker:
        dhead.set_group(_group_sizes(train.groups[head]))
    y_head = train.y[head].astype("float64")
    y_valid = valid.y.astype("float64")
    k = cfg.eval_at

    def feval(preds: np.ndarray, data: Any) -> list[tuple[str, float, bool]]:
        is_head = data is dhead
        y = y_head if is_head else y_valid
        if ranker:
            ndcg, _ = ranking_metrics(train.groups[head] if is_head else valid.groups, y, preds, k)
            return [(f"ndcg@{k}", ndcg, True)]
        return [("logloss", _logloss(y, preds), False), ("auc", _auc(y, preds), True)]

    record: dict[str, dict[str, list[float]]] = {}
    callbacks = [
        lgb.record_evaluation(record),
        lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False),
    ]
    if progress is not None:
        callbacks.append(_progress_callback(progress, cfg.num_boost_round))
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.num_boost_round,
        valid_sets=[dhead, dvalid],
        valid_names=[TRAIN_DATA_NAME, "valid"],
        feval=feval,
        callbacks=callbacks,
    )
    curves = {
        f"{'train' if ds == TRAIN_DATA_NAME else ds}_{metric.replace('@', '_at_')}": list(values)
        for ds, metrics in record.items()
        for metric, values in metrics.items()
    }
    best = int(booster.best_iteration or booster.current_iteration())
    # the booster keeps the trees up to the best iteration; the curves show every round run
    ran = max((len(v) for v in curves.values()), default=booster.current_iteration())
    log.info("trained %d iterations, best %d", ran, best)
    return FitResult(booster=booster, best_iteration=best, curves=curves, params=params)


def _progress_callback(progress: Callable[[str], None], rounds: int) -> Callable[[Any], None]:
    """A LightGBM callback telling `progress` the iteration and the latest validation scores."""

    def report(env: Any) -> None:
        scores = ", ".join(
            f"{ds} {metric} {value:.4f}"
            for ds, metric, value, _ in env.evaluation_result_list or []
            if ds != TRAIN_DATA_NAME
        )
        said = f"iteration {env.iteration + 1} of at most {rounds}"
        progress(f"{said} ({scores})" if scores else said)

    return report


def predict(result: FitResult, X: pd.DataFrame, popularity: np.ndarray) -> np.ndarray:
    """Scores for X: the booster at its best iteration, or the popularity baseline."""
    if result.booster is None:
        return np.asarray(popularity, dtype="float64")
    return np.asarray(
        result.booster.predict(X, num_iteration=result.best_iteration),
        dtype="float64",
    )


def tree_hash(booster: Any) -> str:
    """sha256 of the trees (structure, thresholds, leaf values) up to the best iteration.

    The model file's parameter block records `num_threads`, so hashing the file would differ
    across thread counts for identical trees; this hashes the trees only.
    """
    if booster is None:
        return "none"
    dump = booster.dump_model(num_iteration=booster.best_iteration or None)
    payload = {"trees": dump["tree_info"], "features": dump["feature_names"]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def importance(booster: Any) -> pd.Series | None:
    """Total gain per feature."""
    if booster is None:
        return None
    return pd.Series(
        booster.feature_importance(importance_type="gain"), index=booster.feature_name()
    )
