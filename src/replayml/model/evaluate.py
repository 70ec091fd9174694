"""Pure evaluation: classification and per-user-day ranking metrics, and figures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd


def ranking_per_group(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NDCG@k and recall@k of each group with at least one positive.

    Returns the group ids, their NDCG@k and their recall@k. `groups` is an integer group id
    per row. Rows of a group with the same score share their positions: each gets the tied
    rows' mean relevance (the expectation over every order of the ties, as scikit-learn's
    `ndcg_score` does), so neither row order nor a data file sorted by label moves them.
    """
    rel = (labels > 0).astype("float64")
    order = np.lexsort((-scores, groups))
    g, r, sc = groups[order], rel[order], scores[order]
    if not len(g):
        empty = np.array([], dtype="float64")
        return np.array([], dtype="int64"), empty, empty
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(g)])
    rank = np.arange(len(g)) - np.repeat(starts, sizes)
    # blocks of tied rows within a group (a new group always starts a new block)
    new_block = np.r_[True, (g[1:] != g[:-1]) | (sc[1:] != sc[:-1])]
    blocks = np.flatnonzero(new_block)
    block_sizes = np.diff(np.r_[blocks, len(g)])
    shared = np.repeat(np.add.reduceat(r, blocks) / block_sizes, block_sizes)
    disc = 1.0 / np.log2(rank + 2.0)
    top = rank < k
    dcg = np.add.reduceat(np.where(top, shared * disc, 0.0), starts)
    hits = np.add.reduceat(np.where(top, shared, 0.0), starts)
    npos = np.add.reduceat(r, starts)
    has = npos > 0
    ideal_disc = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = ideal_disc[np.minimum(npos[has], k).astype(int) - 1]
    return g[starts][has], dcg[has] / idcg, hits[has] / npos[has]


def ranking_metrics(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int
) -> tuple[float, float]:
    """Mean NDCG@k and recall@k over groups with at least one positive (NaN without any)."""
    ranked, ndcg, recall = ranking_per_group(groups, labels, scores, k)
    if not len(ranked):
        return float("nan"), float("nan")
    return float(ndcg.mean()), float(recall.mean())


def ranked_groups(groups: np.ndarray, labels: np.ndarray) -> int:
    """How many groups have at least one positive (the ones the ranking metrics average)."""
    positive = np.asarray(labels) > 0
    return int(len(np.unique(np.asarray(groups)[positive])))


def group_ids(frame: pd.DataFrame) -> np.ndarray:
    """A dense group id per (user, day), in order of first appearance."""
    users, _ = pd.factorize(frame["user_id"])
    days, day_values = pd.factorize(frame["day"])
    codes, _ = pd.factorize(users.astype("int64") * max(len(day_values), 1) + days)
    return codes.astype("int64")


def evaluate(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int, probabilities: bool
) -> dict[str, float]:
    """ROC AUC, average precision, log loss (probabilities only), NDCG@k and recall@k."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    y = (labels > 0).astype("int8")
    out: dict[str, float] = {}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, scores))
        out["avg_precision"] = float(average_precision_score(y, scores))
        if probabilities:
            out["logloss"] = float(log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15)))
    ndcg, recall = ranking_metrics(groups, y, scores, k)
    if not np.isnan(ndcg):
        out[f"ndcg_at_{k}"] = ndcg
        out[f"recall_at_{k}"] = recall
    return out


def prediction_hash(scores: np.ndarray) -> str:
    """sha256 of the predictions as little-endian float64 bytes."""
    return hashlib.sha256(np.ascontiguousarray(scores, dtype="<f8").tobytes()).hexdigest()


def test_scores_hash(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> str:
    """sha256 of a test window's groups, labels and scores (what `review` bootstraps), each as
    little-endian int64 / int64 / float64 bytes in row order."""
    h = hashlib.sha256()
    for values, dtype in ((groups, "<i8"), (labels, "<i8"), (scores, "<f8")):
        h.update(np.ascontiguousarray(values, dtype=dtype).tobytes())
    return h.hexdigest()


def pr_curves(
    labels: np.ndarray, scores: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Precision and recall per scorer on the test window; empty when only one class occurs."""
    from sklearn.metrics import precision_recall_curve

    y = (labels > 0).astype("int8")
    if not 0 < y.sum() < len(y):
        return {}
    out = {}
    for name, s in scores.items():
        precision, recall, _ = precision_recall_curve(y, s)
        out[name] = (precision, recall)
    return out


def save_figures(
    out_dir: Path,
    *,
    importance: pd.Series | None,
    curves: dict[str, list[float]],
    pr: dict[str, tuple[np.ndarray, np.ndarray]],
) -> list[Path]:
    """Feature importance, PR curves (`pr_curves`) and learning curves as PNGs.

    Returns the written paths.
    """
    # the object-oriented API renders with Agg and needs neither pyplot nor a display
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        paths.append(out_dir / name)
        fig.savefig(paths[-1], dpi=90)

    if importance is not None and len(importance):
        fig = Figure(figsize=(7, max(3, 0.28 * len(importance))), layout="tight")
        ax = fig.subplots()
        ordered = importance.sort_values()
        ax.barh([str(n) for n in ordered.index], ordered.to_numpy())
        ax.set_xlabel("total gain")
        ax.set_title("Feature importance")
        save(fig, "feature_importance.png")
    if pr:
        fig = Figure(figsize=(6, 4.5), layout="tight")
        ax = fig.subplots()
        for name, (p, r) in pr.items():
            step = max(1, len(r) // 2000)  # a few thousand points draw the same curve
            ax.plot(r[::step], p[::step], label=name)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Precision-recall on the test window")
        ax.legend()
        save(fig, "pr_curve.png")
    if curves:
        fig = Figure(figsize=(6, 4.5), layout="tight")
        ax = fig.subplots()
        for name, values in curves.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=name)
        ax.set_xlabel("iteration")
        ax.set_title("Learning curves")
        ax.legend()
        save(fig, "learning_curves.png")
    return paths
