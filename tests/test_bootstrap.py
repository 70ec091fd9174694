"""The paired bootstrap that says whether a difference between two models is noise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from replayml.model import bootstrap
from replayml.model.bootstrap import Scored, paired_intervals
from replayml.model.evaluate import evaluate, ranking_per_group


def _data(seed: int, n_groups: int = 400, per_group: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    labels = (rng.random(len(groups)) < 0.08).astype("int8")
    return groups, labels


def test_weighted_metrics_equal_scikit_learn_with_sample_weights() -> None:
    rng = np.random.default_rng(1)
    groups, y = _data(1)
    # rounded scores: many ties, which both AUC and average precision must treat as sklearn does
    scores = np.round(np.clip(0.1 * y + rng.random(len(y)) * 0.5, 0.001, 0.999), 2)
    weights = rng.integers(0, 4, size=(3, len(y))).astype("float64")
    order, starts = bootstrap._sorted(scores)
    yf = y.astype("float64")
    pos, neg = bootstrap._blocks(weights[:, order], yf[order], starts)
    auc, ap = bootstrap._auc(pos, neg), bootstrap._average_precision(pos, neg)
    ll = bootstrap._logloss(weights, yf, scores)
    for i, w in enumerate(weights):
        assert auc[i] == pytest.approx(roc_auc_score(y, scores, sample_weight=w), abs=1e-12)
        assert ap[i] == pytest.approx(
            average_precision_score(y, scores, sample_weight=w), abs=1e-12
        )
        assert ll[i] == pytest.approx(log_loss(y, scores, sample_weight=w), abs=1e-12)


def test_per_group_ranking_metrics_average_to_the_logged_ones() -> None:
    rng = np.random.default_rng(2)
    groups, y = _data(2)
    scores = rng.random(len(y))
    _, ndcg, recall = ranking_per_group(groups, y, scores, 10)
    logged = evaluate(y, scores, groups, 10, probabilities=True)
    assert ndcg.mean() == pytest.approx(logged["ndcg_at_10"])
    assert recall.mean() == pytest.approx(logged["recall_at_10"])
    assert len(ndcg) == len(np.unique(groups[y > 0]))


METRICS = ["auc", "avg_precision", "logloss", "ndcg_at_10", "recall_at_10"]


def test_a_model_against_itself_differs_by_exactly_nothing() -> None:
    groups, y = _data(3)
    scores = np.random.default_rng(3).random(len(y))
    same = Scored(y, groups, scores)
    intervals = paired_intervals(same, same, METRICS, resamples=200)
    assert set(intervals) == set(METRICS)
    assert all(i.low == 0.0 and i.high == 0.0 and not i.excludes_zero for i in intervals.values())


def test_a_real_improvement_is_outside_the_noise_and_a_tiny_change_is_inside() -> None:
    groups, y = _data(4, n_groups=1500)
    rng = np.random.default_rng(4)
    noise = rng.random(len(y))
    weak = Scored(y, groups, np.clip(0.02 * y + noise * 0.2, 0.001, 0.999))
    strong = Scored(y, groups, np.clip(0.2 * y + noise * 0.2, 0.001, 0.999))
    jitter = Scored(y, groups, np.clip(weak.scores + rng.normal(0, 1e-3, len(y)), 0.001, 0.999))

    better = paired_intervals(strong, weak, ["auc", "avg_precision", "ndcg_at_10"], resamples=500)
    assert all(i.low > 0 for i in better.values()), better
    delta = roc_auc_score(y, strong.scores) - roc_auc_score(y, weak.scores)
    assert better["auc"].low < delta < better["auc"].high

    tiny = paired_intervals(jitter, weak, ["auc", "logloss"], resamples=500)
    assert all(i.low < 0 < i.high for i in tiny.values()), tiny
    # the same seed gives the same interval: a review is reproducible
    assert paired_intervals(jitter, weak, ["auc"], resamples=500) == {"auc": tiny["auc"]}


def test_resamples_are_processed_in_chunks_without_changing_the_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    groups, y = _data(5)
    rng = np.random.default_rng(5)
    a = Scored(y, groups, rng.random(len(y)))
    b = Scored(y, groups, np.clip(a.scores + 0.1 * y, 0, 1))
    whole = paired_intervals(a, b, METRICS, resamples=300)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", len(y) * 7)  # 7 resamples at a time
    chunked = paired_intervals(a, b, METRICS, resamples=300)
    for name, i in whole.items():  # BLAS may sum a chunk in another order: ULPs apart
        assert (chunked[name].low, chunked[name].high) == pytest.approx((i.low, i.high), rel=1e-12)


def test_models_scored_on_other_rows_are_refused() -> None:
    groups, y = _data(6)
    a = Scored(y, groups, np.zeros(len(y)))
    b = Scored(y[::-1].copy(), groups, np.zeros(len(y)))
    with pytest.raises(ValueError, match="same test rows"):
        paired_intervals(a, b, ["auc"])
