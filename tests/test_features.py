"""Feature builders: point-in-time correctness, purity, column requirements; ranking metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import compose_cfg
from replayml.data.preprocess import preprocess, sample_negatives
from replayml.errors import ConfigError
from replayml.features.build import build_features, check_builders
from replayml.features.registry import available
from replayml.model.evaluate import ranking_metrics


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
    with pytest.raises(
        ConfigError,
        match=r"'price_relative' needs data.items.price\n"
        r".*features.builders=\[user_history,.*features=minimal",
    ):
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


def test_tied_scores_share_their_positions_whatever_the_row_order() -> None:
    from sklearn.metrics import ndcg_score

    from replayml.model.evaluate import ranking_per_group

    # one group, two rows with the same score, one positive, k=1: half a hit either way
    _, ndcg, recall = ranking_per_group(np.zeros(2, "int64"), np.array([1, 0]), np.ones(2), 1)
    assert ndcg.tolist() == [0.5] and recall.tolist() == [0.5]
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 15)
    labels = (rng.random(len(groups)) < 0.25).astype(int)
    scores = rng.integers(0, 4, len(groups)).astype(float)  # many ties, as a popularity score
    ids, ndcg, recall = ranking_per_group(groups, labels, scores, 10)
    expected = [ndcg_score([labels[groups == g]], [scores[groups == g]], k=10) for g in ids]
    assert ndcg == pytest.approx(expected)
    # a file sorted with its positives first (or last) ranks the same
    for first in (True, False):
        order = np.lexsort((labels if first else -labels, groups))[::-1]
        ids2, ndcg2, recall2 = ranking_per_group(groups[order], labels[order], scores[order], 10)
        by_id = np.argsort(ids2)
        assert ids2[by_id].tolist() == ids.tolist()
        assert ndcg2[by_id] == pytest.approx(ndcg) and recall2[by_id] == pytest.approx(recall)


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


def _window_reference(history, targets, keys, values, lookback):  # noqa: ANN001, ANN202
    """Row-by-row: sums over the history rows with the same keys and D - lookback <= day < D."""
    rows = []
    for _, t in targets.iterrows():
        mask = (history["day"] < t["day"]) & (
            history["day"] >= t["day"] - pd.Timedelta(days=lookback)
        )
        for k in keys:
            mask &= history[k] == t[k]
        win = history[mask]
        rows.append({"n": float(len(win)), **{v: float(win[v].sum()) for v in values}})
    return pd.DataFrame(rows, columns=["n", *values])


@pytest.mark.parametrize("dense_cells_per_row", [0, 10**9], ids=["sparse", "dense"])
@pytest.mark.parametrize("keys", [["user_id"], ["user_id", "item_id"]])
def test_window_sums_match_a_row_by_row_computation(
    tables,  # noqa: ANN001
    keys: list[str],
    dense_cells_per_row: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both layouts of the windowed sums (dense grid, sorted cells) equal a direct count,
    including keys never seen in the history and windows reaching before the first day."""
    from replayml.features import builders

    monkeypatch.setattr(builders, "DENSE_CELLS_PER_ROW", dense_cells_per_row)
    _, events, _, _ = tables
    history = events[events["day"] < pd.Timestamp("2024-04-10")]
    history = history[history["user_id"].isin(history["user_id"].unique()[:40])]
    targets = events[events["day"].isin(pd.to_datetime(["2024-03-21", "2024-04-05"]))]
    targets = targets[targets["user_id"].isin(history["user_id"].unique()[:30])].head(150)
    unseen = targets.head(3).assign(user_id=-1)  # a user with no history at all
    targets = pd.concat([targets, unseen], ignore_index=True)
    got = builders._window_lookup(history, targets, keys, ["label", "click"], (2, 7))
    for w in (2, 7):
        expected = _window_reference(history, targets, keys, ["label", "click"], w)
        pd.testing.assert_frame_equal(got[w].reset_index(drop=True), expected)
    assert got[7]["n"].sum() > got[2]["n"].sum() > 0  # the windows do see history


def test_building_windows_together_equals_one_by_one(tables) -> None:  # noqa: ANN001
    """The pipeline builds train, valid and test rows in one pass: same values as separately."""
    cfg, events, items, users = tables
    days = [pd.Timestamp(d) for d in ("2024-04-18", "2024-04-25", "2024-04-29")]
    parts = [events[events["day"] == d].reset_index(drop=True) for d in days]
    together = build_features(
        pd.concat(parts, ignore_index=True), events, items, users, cfg.features
    )
    offset = 0
    for part in parts:
        alone = build_features(part, events, items, users, cfg.features)
        chunk = together.iloc[offset : offset + len(part)].reset_index(drop=True)
        pd.testing.assert_frame_equal(chunk, alone, check_exact=True)
        offset += len(part)


def test_user_recency_matches_a_direct_computation(tables) -> None:  # noqa: ANN001
    from replayml.features.builders import user_recency
    from replayml.features.registry import FeatureContext

    cfg, events, items, users = tables
    targets = events[events["day"] == pd.Timestamp("2024-04-22")].head(300).reset_index(drop=True)
    targets = pd.concat([targets, targets.head(2).assign(user_id=-5)], ignore_index=True)
    got = user_recency(targets, FeatureContext(events, items, users, (7,), 1.0))
    for i, t in targets.iterrows():
        before = events[(events["user_id"] == t["user_id"]) & (events["day"] < t["day"])]
        contacts = before[before["label"] > 0]
        for name, frame in (("days_since_seen", before), ("days_since_contact", contacts)):
            want = (t["day"] - frame["day"].max()).days if len(frame) else np.nan
            want = want if want <= 7 else np.nan  # within the longest lookback only
            assert got.loc[i, name] == pytest.approx(want, nan_ok=True), (i, name)


def test_validation_auc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    from replayml.model.fit import _auc

    rng = np.random.default_rng(3)
    y = (rng.random(5000) < 0.1).astype("float64")
    scores = np.round(rng.random(5000) + y * 0.3, 2)  # rounded: many ties
    assert _auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert np.isnan(_auc(np.zeros(10), rng.random(10)))


def test_bot_users_are_judged_on_days_up_to_the_training_window_end() -> None:
    from replayml.config.schema import PreprocessingConfig

    days = pd.to_datetime(["2024-01-01"] * 3 + ["2024-01-05"] * 5 + ["2024-01-02"] * 5)
    events = pd.DataFrame(
        {
            "user_id": ["calm"] * 3 + ["calm"] * 5 + ["bot"] * 5,  # calm is busy on a test day
            "item_id": range(13),
            "ts": days,
            "day": days,
            "label": [0, 1] * 6 + [0],
        }
    )
    cfg = PreprocessingConfig(bot_max_events_per_day=4, min_item_support=0, dedup=True)
    out, stats = preprocess(events, cfg, pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-03"))
    assert set(out["user_id"]) == {"calm"} and len(out) == 8
    assert (stats.bot_users, stats.bot_rows) == (1, 5)


def test_bot_users_are_judged_on_a_fixed_window_before_the_training_end() -> None:
    from replayml.config.schema import PreprocessingConfig

    # "old" was busy 10 days before the training window's end, "bot" 2 days before
    days = pd.to_datetime(["2024-01-01"] * 5 + ["2024-01-09"] * 5 + ["2024-01-10"] * 2)
    events = pd.DataFrame(
        {
            "user_id": ["old"] * 5 + ["bot"] * 5 + ["old", "bot"],
            "item_id": range(12),
            "ts": days,
            "day": days,
            "label": [0, 1] * 6,
        }
    )
    end = pd.Timestamp("2024-01-11")
    cfg = PreprocessingConfig(bot_max_events_per_day=4, bot_window_days=7)
    # whatever the training window's start, the same users are bots
    for start in (pd.Timestamp("2024-01-09"), pd.Timestamp("2024-01-01")):
        out, stats = preprocess(events, cfg, start, end)
        assert set(out["user_id"]) == {"old"} and (stats.bot_users, stats.bot_rows) == (1, 6)
    wide = PreprocessingConfig(bot_max_events_per_day=4, bot_window_days=11)
    assert preprocess(events, wide, end, end)[1].bot_users == 2


def test_region_match_is_unknown_where_a_region_is_missing(tables) -> None:  # noqa: ANN001
    from dataclasses import replace

    cfg, events, items, users = tables
    only = replace(cfg.features, builders=["region_match"])
    targets = events[events["day"] == pd.Timestamp("2024-04-20")].reset_index(drop=True)
    full = build_features(targets, events, items, users, only)["region_match"]
    some_users = users.iloc[: len(users) // 2]  # new users are not in the users table yet
    items_na = items.assign(item_region=items["item_region"].where(items.index % 3 > 0))
    part = build_features(targets, events, items_na, some_users, only)["region_match"]
    known = (
        targets["user_id"].isin(some_users["user_id"]).to_numpy()
        & targets["item_id"].map(items_na.set_index("item_id")["item_region"]).notna().to_numpy()
    )
    assert 0 < known.sum() < len(targets)
    assert part[~known].isna().all()
    np.testing.assert_array_equal(part[known].to_numpy(), full[known].to_numpy())
