"""How much of a difference between two models scored on the same test rows is noise.

A paired cluster bootstrap: the test window's (user, day) groups are resampled with
replacement, both models are scored on every resample, and the 2.5th and 97.5th percentiles
of the per-resample differences bound the difference. Groups, not rows, are resampled because
a user's impressions on one day are not independent (and the ranking metrics are means over
groups). Each metric is computed with resampling weights in one vectorised pass per chunk of
resamples, by the same definitions as `replayml.model.evaluate.evaluate` (scikit-learn's ROC
AUC, average precision and log loss; NDCG@k and recall@k over groups with a positive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replayml.model.evaluate import ranking_per_group

#: the percentiles of the bootstrap distribution reported as the interval
INTERVAL = (2.5, 97.5)
#: resamples times rows in one chunk (float64: 8 bytes each; a chunk makes a few such arrays)
CHUNK_CELLS = 2_500_000
RANKING = ("ndcg_at_", "recall_at_")


@dataclass(frozen=True)
class Interval:
    """The bootstrap interval of one metric's difference (run minus baseline)."""

    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Scored:
    """One model's test scores with the rows' labels and (user, day) group ids."""

    labels: np.ndarray
    groups: np.ndarray
    scores: np.ndarray


def _blocks(
    weights: np.ndarray, y: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per run of tied scores, per resample; `y` and the columns
    of `weights` in descending score order, `starts` the first row of each run."""
    pos = np.add.reduceat(weights * y, starts, axis=1)
    return pos, np.add.reduceat(weights, starts, axis=1) - pos


def _auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC per resample from `_blocks`."""
    n_neg = neg.sum(axis=1, keepdims=True)
    below = n_neg - np.cumsum(neg, axis=1)  # negatives scored strictly lower than the block
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * n_neg[:, 0])


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Weighted average precision per resample from `_blocks` (scikit-learn's step-wise
    definition: precision at each threshold, weighted by the recall it adds)."""
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pos > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        return (pos * precision).sum(axis=1) / tp[:, -1]


def _logloss(weights: np.ndarray, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    p = np.clip(scores, 1e-15, 1 - 1e-15)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ loss) / weights.sum(axis=1)


def _sorted(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by descending score and the first position of each run of tied scores."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    return order, np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]


def paired_intervals(
    run: Scored,
    baseline: Scored,
    metrics: list[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Interval]:
    """Bootstrap intervals of `run - baseline` for each of `metrics` it can compute.

    `metrics` are names as `evaluate` returns them (`auc`, `avg_precision`, `logloss`,
    `ndcg_at_K`, `recall_at_K`); unknown names are skipped. Both must hold the same rows in
    the same order (equal labels and groups); `ValueError` otherwise.
    """
    if not (
        np.array_equal(run.labels, baseline.labels) and np.array_equal(run.groups, baseline.groups)
    ):
        raise ValueError("the two models were not scored on the same test rows in the same order")
    y = (np.asarray(run.labels) > 0).astype("float64")
    groups = np.asarray(run.groups, dtype="int64")
    _, dense = np.unique(groups, return_inverse=True)
    n_groups = int(dense.max()) + 1 if len(dense) else 0
    if n_groups == 0:
        return {}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=resamples)
    counts = counts.astype("float64")

    scores = {
        "run": np.asarray(run.scores, dtype="float64"),
        "base": np.asarray(baseline.scores, dtype="float64"),
    }
    cutoffs = {int(m.rsplit("_at_", 1)[1]) for m in metrics if m.startswith(RANKING)}
    per_group = {
        (name, k): ranking_per_group(dense, y, s, k) for name, s in scores.items() for k in cutoffs
    }
    sorted_by = {name: _sorted(s) for name, s in scores.items()}
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    step = max(1, CHUNK_CELLS // max(len(y), 1))
    for first in range(0, resamples, step):
        c = counts[first : first + step]
        values: dict[str, dict[str, np.ndarray]] = {"run": {}, "base": {}}
        for name, s in scores.items():
            order, starts = sorted_by[name]
            if {"auc", "avg_precision"} & set(metrics):
                pos, neg = _blocks(c[:, dense[order]], y[order], starts)
            for metric in metrics:
                if metric == "auc":
                    values[name][metric] = _auc(pos, neg)
                elif metric == "avg_precision":
                    values[name][metric] = _average_precision(pos, neg)
                elif metric == "logloss":
                    values[name][metric] = _logloss(c[:, dense], y, s)
                elif metric.startswith(RANKING):
                    kind, k = metric.rsplit("_at_", 1)
                    index, ndcg, recall = per_group[name, int(k)]
                    v = ndcg if kind == "ndcg" else recall
                    gw = c[:, index]
                    with np.errstate(invalid="ignore", divide="ignore"):
                        values[name][metric] = (gw @ v) / gw.sum(axis=1)
        for metric in values["run"]:
            diffs[metric].append(values["run"][metric] - values["base"][metric])
    out = {}
    for metric, parts in diffs.items():
        if not parts:
            continue
        d = np.concatenate(parts)
        d = d[np.isfinite(d)]
        if len(d) < max(10, resamples // 2):  # the metric is undefined on most resamples
            continue
        low, high = np.percentile(d, INTERVAL)
        out[metric] = Interval(float(low), float(high))
    return out
