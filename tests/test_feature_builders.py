"""Feature builders of one's own, as a run uses them: what they see, what they may return,
and how a run checks them before it starts."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, all_runs, git, run_train_py, train
from replayml.data.preprocess import sample_negatives
from replayml.errors import ConfigError
from replayml.features import registry
from replayml.features.build import build_features
from replayml.features.registry import FeatureContext, register

BUILT_IN = [
    "user_history",
    "item_history",
    "user_category_affinity",
    "price_relative",
    "listing_age",
    "user_recency",
    "region_match",
]


@pytest.fixture
def own() -> Iterator[Callable[..., Callable]]:
    """`own(name)(fn)` registers a builder for one test, removed from the registry after it."""
    names: list[str] = []

    def add(name: str, **needs: tuple[str, ...]) -> Callable:
        names.append(name)
        return register(name, **needs)

    yield add
    for name in names:
        registry._REGISTRY.pop(name, None)


def _windows(events: pd.DataFrame) -> pd.DataFrame:
    """Target rows as a run has them: sampled training days, then validation and test days."""
    day = events["day"]
    train = events[(day >= "2024-04-21") & (day <= "2024-04-27")].reset_index(drop=True)
    later = events[day >= "2024-04-28"]
    return pd.concat([sample_negatives(train, 0.5, 7), later], ignore_index=True)


def _item_rate_naive(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """The item's contact rate over the whole history: validation and test days included."""
    rate = ctx.history.groupby("item_id")["label"].mean()
    return pd.DataFrame(
        {"item_rate_naive": targets["item_id"].map(rate).to_numpy("float64")},
        index=targets.index,
    )


def _item_contacts_through_today(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """The item's contacts on the row's own day and the day before: one day too late."""
    daily = ctx.history.groupby(["item_id", "day"])["label"].sum()
    shifted = daily.rename(lambda d: d + pd.Timedelta(days=1), level="day")
    both = daily.add(shifted, fill_value=0).rename("n").reset_index()
    rows = targets[["item_id", "day"]].merge(both, on=["item_id", "day"], how="left")
    return pd.DataFrame({"item_contacts_2d": rows["n"].fillna(0).to_numpy()}, index=targets.index)


def _user_rows_in_targets(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """How often the user appears among all target rows: later days' rows included."""
    counts = targets["user_id"].map(targets["user_id"].value_counts())
    return pd.DataFrame({"user_rows": counts.to_numpy("float64")}, index=targets.index)


def test_builders_never_see_their_rows_outcomes(tables, own) -> None:  # noqa: ANN001
    cfg, events, items, users = tables
    seen: list[list[str]] = []

    @own("columns_seen")
    def columns_seen(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
        seen.append(list(targets.columns))
        return pd.DataFrame({"one": 1.0}, index=targets.index)

    @own("own_label")
    def own_label(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
        return pd.DataFrame({"own": targets["label"].to_numpy("float64")}, index=targets.index)

    targets = events[events["day"] == pd.Timestamp("2024-04-25")].reset_index(drop=True)
    assert {"label", "click"} <= set(targets.columns)
    build_features(targets, events, items, users, replace(cfg.features, builders=["columns_seen"]))
    assert seen and not {"label", "click"} & set(seen[0]), seen
    assert {"user_id", "item_id", "ts", "day"} <= set(seen[0])
    with pytest.raises(ConfigError, match=r"'own_label' reads targets\['label'\].*ctx.history"):
        build_features(
            targets, events, items, users, replace(cfg.features, builders=["own_label"])
        )


def test_the_built_in_builders_pass_the_point_in_time_check(tables) -> None:  # noqa: ANN001
    from replayml.features.build import check_point_in_time

    cfg, events, items, users = tables
    every = replace(cfg.features, builders=BUILT_IN)
    days = [pd.Timestamp("2024-04-27"), pd.Timestamp("2024-04-28"), pd.Timestamp("2024-04-29")]
    check_point_in_time(_windows(events), events, items, users, every, days)


@pytest.mark.parametrize(
    ("fn", "column"),
    [
        (_item_rate_naive, "item_rate_naive"),
        (_item_contacts_through_today, "item_contacts_2d"),
        (_user_rows_in_targets, "user_rows"),
    ],
    ids=["whole-history", "same-day", "later-targets"],
)
def test_builders_that_see_their_day_or_later_fail_the_check(
    tables,  # noqa: ANN001
    own,  # noqa: ANN001
    fn: Callable,
    column: str,
) -> None:
    from replayml.features.build import check_point_in_time

    cfg, events, items, users = tables
    own("leaky")(fn)
    leaky = replace(cfg.features, builders=["user_history", "leaky"])
    with pytest.raises(
        ConfigError,
        match=rf"builder 'leaky' is not point-in-time: for the rows of 2024-04-27 its column "
        rf"'{column}' changes.*: a builder must use only events of days before each target "
        rf"row's day; see README",
    ):
        check_point_in_time(
            _windows(events), events, items, users, leaky, [pd.Timestamp("2024-04-27")]
        )


def test_a_builder_reading_the_future_fails_before_any_run(project: Path, own) -> None:  # noqa: ANN001
    own("item_rate_naive")(_item_rate_naive)
    with pytest.raises(
        ConfigError,
        match=r"builder 'item_rate_naive' is not point-in-time: for the rows of 2024-04-\d\d its "
        r"column 'item_rate_naive' changes .*a builder must use only events of days before",
    ):
        train(project, ["features.builders=[user_history,item_rate_naive]"])
    assert all_runs(project) == []


def test_two_builders_returning_one_column_fail_before_any_run(project: Path, own) -> None:  # noqa: ANN001
    @own("weekday_as_recency")
    def weekday_as_recency(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
        days = targets["day"].dt.dayofweek.astype("float64")
        return pd.DataFrame({"days_since_seen": days}, index=targets.index)

    with pytest.raises(
        ConfigError,
        match=r"'user_recency' and 'weekday_as_recency' both return column 'days_since_seen'",
    ):
        train(project, ["features.builders=[user_recency,weekday_as_recency]"])

    @own("twice")
    def twice(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
        return pd.concat([weekday_as_recency(targets, ctx)] * 2, axis=1)

    with pytest.raises(ConfigError, match=r"'twice' returns column 'days_since_seen' more than"):
        train(project, ["features.builders=[user_history,twice]"])
    assert all_runs(project) == []


def test_infinite_values_from_an_own_builder_are_refused(tables, own) -> None:  # noqa: ANN001
    cfg, events, items, users = tables

    @own("ratio")
    def ratio(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
        hour = targets["ts"].dt.hour.to_numpy("float64")
        with np.errstate(divide="ignore"):
            return pd.DataFrame({"inv_hour": 1.0 / hour}, index=targets.index)

    targets = events[events["day"] == pd.Timestamp("2024-04-25")].reset_index(drop=True)
    assert (targets["ts"].dt.hour == 0).any()
    with pytest.raises(ConfigError, match=r"builder 'ratio' returns infinite values in column "
                       r"'inv_hour'.*return NaN"):  # fmt: skip
        build_features(targets, events, items, users, replace(cfg.features, builders=["ratio"]))


def test_a_zero_median_price_gives_nan_not_inf(tables) -> None:  # noqa: ANN001
    cfg, events, items, users = tables
    targets = _windows(events)
    # two in three items of one category cost 0: its median price is 0, some prices are not
    category = items["category"] == items["category"].iloc[0]
    free = category & (np.arange(len(items)) % 3 > 0)
    zero = items.assign(price=items["price"].where(~free, 0.0))
    only = replace(cfg.features, builders=["price_relative"])
    X = build_features(targets, events, zero, users, only)
    assert np.isfinite(X["log_price"]).all()
    in_category = targets["item_id"].isin(items.loc[category, "item_id"]).to_numpy()
    paid = targets["item_id"].isin(items.loc[category & ~free, "item_id"]).to_numpy()
    assert paid.any() and X.loc[in_category, "price_rel_category"].isna().all()
    assert np.isfinite(X.loc[~in_category, "price_rel_category"]).all()


def test_unusable_columns_of_the_training_rows_are_said(
    tables,  # noqa: ANN001
    caplog: pytest.LogCaptureFixture,
) -> None:
    from replayml.features.build import build_matrix

    cfg, events, items, users = tables
    targets = _windows(events)
    train_rows = (targets["day"] <= pd.Timestamp("2024-04-27")).to_numpy()
    days = [pd.Timestamp("2024-04-27"), pd.Timestamp("2024-04-28")]
    every = replace(cfg.features, builders=BUILT_IN)
    with caplog.at_level("WARNING"):
        build_matrix(targets, events, items, users, every, train_rows, days)
    assert "cannot learn from" not in caplog.text  # the built-in data: nothing to say

    empty = items.assign(price=np.nan)
    constant = users.assign(user_region=users["user_region"].iloc[0])
    odd = items.assign(item_region=users["user_region"].iloc[0])
    with caplog.at_level("WARNING"):
        build_matrix(targets, events, empty, constant, every, train_rows, days)
        build_matrix(targets, events, odd, constant, every, train_rows, days)
    said = [r.getMessage() for r in caplog.records if "cannot learn from" in r.getMessage()]
    assert len(said) == 2, caplog.text
    assert "the training rows (2024-04-21..2024-04-27)" in said[0]
    assert "all NaN: log_price (price_relative), price_rel_category (price_relative)" in said[0]
    assert "constant: region_match (region_match)" in said[1]
    assert "behind them (data.items.category, data.items.price)" in said[0]
    assert "behind them (data.items.region, data.users.region)" in said[1]
    assert "features.builders" in said[0]


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (example,) = [b for b in blocks if '@register("weekday")' in b]
    return example


def test_a_builder_in_its_own_module_trains(project: Path) -> None:
    """README's example, dropped into src/replayml/features/ and committed, trains."""
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "src" / "replayml" / "features" / "news.py").write_text(_readme_example())
    git(project, "add", "-A")
    git(project, "commit", "-qm", "code with a builder of its own")
    proc = run_train_py(
        project,
        "model.num_boost_round=5",
        "features.builders=[user_history,item_history,weekday,item_contacts_yesterday]",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    assert run.info.status == "FINISHED"
    (lineage,) = (project / "outputs").rglob("lineage.json")
    names = pd.read_json(lineage, typ="series")["feature_names"]
    assert {"weekday", "item_contacts_yesterday"} <= set(names)
    assert "news.py" not in run.data.tags.get("replayml.not_replayable_reasons", "")


def test_a_builder_name_taken_twice_is_refused() -> None:
    registry.available()
    kept = registry._REGISTRY["user_history"]
    try:
        with pytest.raises(
            ConfigError,
            match=r"'user_history' is registered twice: by "
            r"replayml.features.builders.user_history and by .*_item_rate_naive",
        ):
            register("user_history")(_item_rate_naive)
    finally:
        registry._REGISTRY["user_history"] = kept


def test_a_sweep_job_whose_builder_crashes_names_the_error_in_the_sweeps_table(
    project: Path,
) -> None:
    import subprocess
    import sys

    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "src" / "replayml" / "features" / "bomb.py").write_text(
        "from replayml.features.registry import register\n\n\n"
        '@register("bomb")\n'
        "def bomb(targets, ctx):\n"
        '    raise RuntimeError("boom from builder")\n'
    )
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a builder that crashes")
    proc = run_train_py(
        project, "-m", "model.num_boost_round=5",
        "features.builders=[user_history],[user_history,bomb]",
    )  # fmt: skip
    assert proc.returncode != 0
    sweep_id = proc.stdout.split("sweep ", 1)[1].split()[0].rstrip(":")
    table = subprocess.run(
        [sys.executable, "-m", "replayml", "sweep", sweep_id], cwd=project,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-3000:]
    row = next(line for line in table.stdout.splitlines() if "NEVER RAN" in line)
    assert "bomb" in row and "RuntimeError: boom from builder" in row
