"""Feature builders: point-in-time correctness, purity, column requirements; ranking metrics."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import compose_cfg
from replayml.data.load import load
from replayml.data.preprocess import preprocess, sample_negatives
from replayml.errors import ConfigError
from replayml.features.build import build_features, check_builders
from replayml.features.registry import available
from replayml.model.evaluate import ranking_metrics


@pytest.fixture(scope="module")
def tables(template_project: Path):  # noqa: ANN201
    cfg = compose_cfg(template_project)
    t = load(cfg.data, template_project, date(2024, 3, 20), date(2024, 4, 29))
    events, _ = preprocess(
        t.events, cfg.preprocessing, pd.Timestamp("2024-04-14"), pd.Timestamp("2024-04-27")
    )
    return cfg, events, t.items, t.users


def test_features_for_a_day_ignore_that_day_and_later(tables) -> None:  # noqa: ANN001
    """Point in time: features for day D are unchanged when days >= D are removed or altered."""
    cfg, events, items, users = tables
    day = pd.Timestamp("2024-04-20")
    targets = events[events["day"] == day].reset_index(drop=True)
    full = build_features(targets, events, items, users, cfg.features)
    past_only = events[events["day"] < day]
    truncated = build_features(
        targets, pd.concat([past_only, targets]), items, users, cfg.features
    )
    pd.testing.assert_frame_equal(full, truncated)
    # flipping every outcome on day D and later must not change D's features either
    flipped = events.copy()
    later = flipped["day"] >= day
    flipped.loc[later, "label"] = 1 - flipped.loc[later, "label"]
    pd.testing.assert_frame_equal(
        full, build_features(targets, flipped, items, users, cfg.features)
    )
    # ...while flipping an earlier day does change them (the test can fail)
    earlier = events.copy()
    mask = earlier["day"] == day - pd.Timedelta(days=1)
    earlier.loc[mask, "label"] = 1 - earlier.loc[mask, "label"]
    assert not full.equals(build_features(targets, earlier, items, users, cfg.features))


def test_builders_do_not_mutate_inputs(tables) -> None:  # noqa: ANN001
    cfg, events, items, users = tables
    targets = events[events["day"] == pd.Timestamp("2024-04-25")].reset_index(drop=True)
    before = (events.copy(), targets.copy(), items.copy(), users.copy())
    build_features(targets, events, items, users, cfg.features)
    for a, b in zip(before, (events, targets, items, users), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_every_registered_builder_is_in_some_config_or_documented() -> None:
    assert {"user_history", "item_history", "user_category_affinity", "price_relative",
            "listing_age", "user_recency", "region_match"} <= set(available())  # fmt: skip


def test_builder_needing_an_unmapped_column_fails_before_work(template_project: Path) -> None:
    from replayml.pipeline import _mapped_columns

    cfg = compose_cfg(template_project, ["data.items.price=null"])
    with pytest.raises(ConfigError, match="'price_relative'.*'price'.*features=minimal"):
        check_builders(cfg.features, *_mapped_columns(cfg.data))
    minimal = compose_cfg(template_project, ["data.items.price=null", "features=minimal"])
    check_builders(minimal.features, *_mapped_columns(minimal.data))  # passes


def test_unknown_builder_lists_available(template_project: Path) -> None:
    cfg = compose_cfg(template_project, ["features.builders=[user_history,magic]"])
    with pytest.raises(ConfigError, match="unknown builder 'magic'.*item_history"):
        check_builders(cfg.features, {"user_id", "item_id", "ts", "label"}, None, None)


def test_negative_sampling_keeps_positives_and_is_seeded(tables) -> None:  # noqa: ANN001
    _, events, _, _ = tables
    a = sample_negatives(events, 0.3, seed=5)
    b = sample_negatives(events, 0.3, seed=5)
    c = sample_negatives(events, 0.3, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert a["label"].sum() == events["label"].sum()
    assert 0.2 < (len(a) - a["label"].sum()) / (len(events) - events["label"].sum()) < 0.4


def test_ranking_metrics_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 12)
    labels = (rng.random(len(groups)) < 0.2).astype(int)
    scores = rng.random(len(groups))
    ndcg, recall = ranking_metrics(groups, labels, scores, 10)
    per_ndcg, per_recall = [], []
    for g in range(50):
        idx = groups == g
        y, s = labels[idx], scores[idx]
        if y.sum() == 0:
            continue
        order = np.argsort(-s, kind="stable")[:10]
        dcg = sum(y[j] / np.log2(r + 2) for r, j in enumerate(order))
        ideal = sum(1 / np.log2(r + 2) for r in range(min(int(y.sum()), 10)))
        per_ndcg.append(dcg / ideal)
        per_recall.append(y[order].sum() / y.sum())
    assert ndcg == pytest.approx(np.mean(per_ndcg))
    assert recall == pytest.approx(np.mean(per_recall))


def test_slice_hash_sees_row_order_and_dtypes(tables) -> None:  # noqa: ANN001  # D4
    from replayml.pipeline import frame_hash

    cfg, events, items, users = tables
    targets = events[events["day"] == pd.Timestamp("2024-04-25")].reset_index(drop=True)
    X = build_features(targets, events, items, users, cfg.features)
    y = targets["label"].to_numpy()
    base = frame_hash(X, y)
    assert frame_hash(X.copy(), y.copy()) == base
    assert frame_hash(X.iloc[::-1].reset_index(drop=True), y[::-1]) != base
    assert frame_hash(X.astype("float32"), y) != base
    flipped = y.copy()
    flipped[0] = 1 - flipped[0]
    assert frame_hash(X, flipped) != base
