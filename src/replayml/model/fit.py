"""Fit and predict LightGBM under the determinism profile. No tracking in here."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from replayml.config.schema import ModelConfig, ModelKind
from replayml.model.evaluate import ranking_metrics

log = logging.getLogger(__name__)

TRAIN_AUC_ROWS = 50_000


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
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype="float64")
    ranks[order] = np.arange(1, len(s) + 1)
    # average ranks over ties so the value does not depend on row order
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    npos = y.sum()
    nneg = len(y) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    return float((ranks[y > 0].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def fit(train: Split, valid: Split, cfg: ModelConfig) -> FitResult:
    """Train with early stopping on the validation window; curves per iteration."""
    if cfg.kind is ModelKind.popularity:
        return FitResult(booster=None, best_iteration=0)
    # OpenMP threads that spin between iterations starve the Python validation metric on
    # small machines; passive waiting changes timing only, never the trees
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightgbm as lgb

    ranker = cfg.kind is ModelKind.lgbm_ranker
    params = lgb_params(cfg)
    label_train = train.grades if ranker else train.y
    dtrain = lgb.Dataset(train.X, label=label_train, free_raw_data=True)
    dvalid = lgb.Dataset(valid.X, label=valid.grades if ranker else valid.y, reference=dtrain)
    if ranker:
        dtrain.set_group(_group_sizes(train.groups))
        dvalid.set_group(_group_sizes(valid.groups))
    y_train = train.y.astype("float64")
    y_valid = valid.y.astype("float64")
    k = cfg.eval_at

    def feval(preds: np.ndarray, data: Any) -> list[tuple[str, float, bool]]:
        is_train = data is dtrain
        if ranker:
            groups = train.groups if is_train else valid.groups
            y = y_train if is_train else y_valid
            ndcg, _ = ranking_metrics(groups, y, preds, k)
            return [(f"ndcg@{k}", ndcg, True)]
        if is_train:  # AUC on a fixed prefix keeps the per-iteration cost small
            head = slice(0, TRAIN_AUC_ROWS)
            return [
                ("logloss", _logloss(y_train, preds), False),
                ("auc", _auc(y_train[head], preds[head]), True),
            ]
        return [("logloss", _logloss(y_valid, preds), False), ("auc", _auc(y_valid, preds), True)]

    record: dict[str, dict[str, list[float]]] = {}
    callbacks = [
        lgb.record_evaluation(record),
        lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False),
    ]
    valid_sets = [dvalid] if ranker else [dtrain, dvalid]
    valid_names = ["valid"] if ranker else ["training", "valid"]
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.num_boost_round,
        valid_sets=valid_sets,
        valid_names=valid_names,
        feval=feval,
        callbacks=callbacks,
    )
    curves = {
        f"{'train' if ds == 'training' else ds}_{metric.replace('@', '_at_')}": list(values)
        for ds, metrics in record.items()
        for metric, values in metrics.items()
    }
    best = int(booster.best_iteration or booster.current_iteration())
    log.info("trained %d iterations, best %d", booster.current_iteration(), best)
    return FitResult(booster=booster, best_iteration=best, curves=curves, params=params)


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
