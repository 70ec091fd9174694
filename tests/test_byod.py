"""Bring your own data: another dataset, other column names, one CSV file, no attribute tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import all_runs, dvc, git, run_train_py, train

pytestmark = pytest.mark.slow

SHOP_CONF = """\
# A shop's click log: one CSV file, its own column names, no item or user tables.
name: shop
root: shop_data
dvc_file: shop_data.dvc
events:
  path: events.csv
  user: visitor
  item: product
  timestamp: seen_at
  label: bought
items:
  path: null
users:
  path: null
"""


def _shop_events(n_days: int = 30, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:04d}" for i in range(400)])
    quality = rng.beta(1, 12, size=120)
    n = 20_000
    day = rng.integers(0, n_days, size=n)
    item = rng.zipf(1.6, size=n) % 120
    ts = (
        pd.Timestamp("2025-01-01")
        + pd.to_timedelta(day, "D")
        + pd.to_timedelta(rng.integers(0, 86_400, size=n), "s")
    )
    frame = pd.DataFrame(
        {
            "visitor": rng.choice(users, size=n),
            "product": item,
            "seen_at": ts,
            "bought": (rng.random(n) < quality[item]).astype(int),
        }  # fmt: skip
    )
    return frame.sort_values("seen_at", kind="mergesort", ignore_index=True)


def _add_shop(project: Path, events: pd.DataFrame) -> None:
    """The shop dataset in its own DVC-tracked folder with its own .dvc file (README)."""
    (project / "shop_data").mkdir()
    events.to_csv(project / "shop_data" / "events.csv", index=False)
    (project / "conf" / "data" / "shop.yaml").write_text(SHOP_CONF)
    dvc(project, "add", "-q", "shop_data")


def test_a_new_dataset_trains_through_the_same_entry(project: Path) -> None:
    _add_shop(project, _shop_events())
    git(project, "add", "-A")
    git(project, "commit", "-qm", "add the shop dataset")
    args = ["data=shop", "features=minimal", "preprocessing=none", "dates=last_7d"]
    proc = run_train_py(project, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    tags = run.data.tags
    assert tags["replayml.dataset"] == "shop"
    assert tags["replayml.dates.test_end"] == "2025-01-30"
    assert run.data.metrics["test_auc"] > 0.55  # item quality is learnable from history
    # the default builders need item columns this dataset does not have: a clear error
    bad = run_train_py(project, "data=shop", "dates=last_7d")
    assert bad.returncode == 2
    assert "'listing_age' needs data.items.path, data.items.created" in bad.stderr
    assert "'region_match' needs data.items.path, data.items.region, data.users.path" in bad.stderr
    assert "features.builders=[user_history,item_history,user_recency]" in bad.stderr


def test_a_partial_last_day_is_not_scored_as_a_test_set(project: Path) -> None:
    # a dump cut shortly after midnight: its last day has 3 rows, of both labels, which used
    # to be scored as the whole test set (AUC 1.0)
    events = _shop_events()
    late = pd.DataFrame(
        {
            "visitor": ["u0001", "u0002", "u0003"],
            "product": [1, 2, 3],
            "seen_at": pd.Timestamp("2025-01-31 00:10") + pd.to_timedelta([0, 60, 120], "s"),
            "bought": [1, 0, 1],
        }
    )
    _add_shop(project, pd.concat([events, late], ignore_index=True))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "add the shop dataset")
    args = ["data=shop", "features=minimal", "preprocessing=none", "dates=last_7d"]
    proc = run_train_py(project, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = "the test window 2025-01-31..2025-01-31 has only 3 rows (2 positives)"
    assert said in proc.stderr and "it needs at least 100 rows" in proc.stderr
    assert "dates.anchor=2025-01-30" in proc.stderr
    assert all_runs(project) == []
    fixed = run_train_py(project, *args, "dates.anchor=2025-01-30")
    assert fixed.returncode == 0, fixed.stderr[-3000:]


def test_a_missing_mapped_column_is_named(project: Path) -> None:
    (project / "shop_data").mkdir()
    _shop_events().rename(columns={"bought": "purchased"}).to_csv(
        project / "shop_data" / "events.csv", index=False
    )
    (project / "conf" / "data" / "shop.yaml").write_text(SHOP_CONF)
    dvc(project, "add", "-q", "shop_data")
    proc = run_train_py(project, "data=shop", "features=minimal", "dates=last_7d")
    assert proc.returncode == 2
    assert "no column 'bought' (data.events.label=bought)" in proc.stderr
    assert "purchased" in proc.stderr
    assert all_runs(project) == []


# --- what a dataset's columns may hold: checked on load, before any run exists ---------------


def _events_frame(n: int = 2_000, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2025-03-01") + pd.to_timedelta(rng.integers(0, 10 * 86_400, n), "s")
    return pd.DataFrame(
        {
            "uid": rng.integers(0, 50, n),
            "iid": rng.integers(0, 30, n),
            "when": ts,
            "y": (rng.random(n) < 0.2).astype("int64"),
        }
    )


def _cfg(path: str, **events: object):  # noqa: ANN202
    """A DataConfig over `data/<path>` with the test frames' column names."""
    from replayml.config.schema import DataConfig, EventsTable, ItemsTable

    items = events.pop("items", ItemsTable())
    return DataConfig(
        name="t",
        events=EventsTable(
            path=path, user="uid", item="iid", timestamp="when", label="y", **events
        ),  # fmt: skip
        items=items,
    )


def _partitions(root: Path, frame: pd.DataFrame, days: pd.Series) -> None:
    """Write `frame` as data/hive/date=DAY/part-0.parquet, one folder per value of `days`."""
    for day, part in frame.groupby(days):
        folder = root / "data" / "hive" / f"date={day}"
        folder.mkdir(parents=True)
        part.to_parquet(folder / "part-0.parquet", index=False)


def _load(root: Path, frame: pd.DataFrame, name: str = "events.parquet", **events: object):
    from replayml.data.load import load

    (root / "data").mkdir(exist_ok=True)
    path = root / "data" / name
    if ".csv" in name:
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    cfg = _cfg(name, **events)
    return load(cfg, root, pd.Timestamp("2025-03-02").date(), pd.Timestamp("2025-03-05").date())


def test_epoch_seconds_load_like_timestamps_with_their_unit(tmp_path: Path) -> None:
    from replayml.config.schema import TimeUnit
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    native = _load(tmp_path, frame).events
    epoch = frame.assign(when=(frame["when"] - pd.Timestamp(0)) // pd.Timedelta(seconds=1))
    with pytest.raises(DataSchemaError, match=r"data.events.timestamp_unit.*MovieLens"):
        _load(tmp_path, epoch, "movielens.csv")
    as_seconds = _load(tmp_path, epoch, "movielens.csv", timestamp_unit=TimeUnit.s).events
    # a CSV's ids are read as text
    pd.testing.assert_frame_equal(as_seconds, native.astype({"user_id": str, "item_id": str}))
    assert native["day"].min() == pd.Timestamp("2025-03-02")
    assert native["day"].max() == pd.Timestamp("2025-03-05")


def test_zone_aware_times_are_read_in_utc(tmp_path: Path) -> None:
    frame = _events_frame()
    native = _load(tmp_path, frame).events
    berlin = frame.assign(when=frame["when"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin"))
    pd.testing.assert_frame_equal(_load(tmp_path, berlin).events, native)
    # a CSV with `...Z` times is read by pyarrow as zone-aware
    iso_z = frame.assign(when=frame["when"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    as_text = native.astype({"user_id": str, "item_id": str})  # a CSV's ids are text
    pd.testing.assert_frame_equal(_load(tmp_path, iso_z, "z.csv").events, as_text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(y=f["y"] * 4 + 1), r"'y' \(data.events.label=y\) must hold 0/1 .*found 1, 5"),  # noqa: E501
        (lambda f: f.assign(y=f["y"].where(f.index % 7 > 0)), r"'y' \(data.events.label=y\) has \d+ empty"),  # noqa: E501
        (lambda f: f.assign(when=f["when"].where(f.index % 9 > 0)), r"'when' \(data.events.timestamp=when\) has \d+ empty"),  # noqa: E501
        (lambda f: f.assign(uid=f["uid"].astype("Int64").where(f.index % 9 > 0)), r"'uid' \(data.events.user=uid\) has \d+ empty"),  # noqa: E501
        (lambda f: f.assign(when=f["when"].dt.strftime("%d/%m/%Y %H:%M")), r"should be a timestamp, found (large_)?string.*pd.to_datetime"),  # noqa: E501
    ],
    ids=["ratings-as-label", "empty-labels", "empty-times", "empty-users", "times-as-text"],
)  # fmt: skip
def test_bad_event_values_are_named(tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    from replayml.errors import DataSchemaError

    with pytest.raises(DataSchemaError, match=message):
        _load(tmp_path, change(_events_frame()))


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (pd.DataFrame({"iid": [1, 2, 2], "cat": ["a", "b", "c"]}), r"'iid' \(data.items.id=iid\) has 1 ids on more than one row \(e.g. 2\)"),  # noqa: E501
        (pd.DataFrame({"iid": ["1", "2"], "cat": ["a", "b"]}), r"holds strings but the events' ids \(data.events.item=iid\) hold integers"),  # noqa: E501
        (pd.DataFrame({"iid": [1, 2], "cat": [0.5, 1.5]}), r"'cat' \(data.items.category=cat\) should be text or integer, found double"),  # noqa: E501
    ],
    ids=["duplicate-ids", "id-types-differ", "fractional-categories"],
)  # fmt: skip
def test_bad_item_tables_are_named(tmp_path: Path, items: pd.DataFrame, message: str) -> None:
    from replayml.config.schema import ItemsTable
    from replayml.errors import DataSchemaError

    (tmp_path / "data").mkdir()
    items.to_parquet(tmp_path / "data" / "items.parquet", index=False)
    table = ItemsTable(path="items.parquet", id="iid", category="cat")
    with pytest.raises(DataSchemaError, match=message):
        _load(tmp_path, _events_frame(), items=table)


def test_a_ratings_label_fails_before_any_run(project: Path) -> None:
    (project / "shop_data").mkdir()
    events = _shop_events()
    events["bought"] = events["bought"] * 3 + 2  # star ratings, not outcomes
    events.to_csv(project / "shop_data" / "events.csv", index=False)
    (project / "conf" / "data" / "shop.yaml").write_text(SHOP_CONF)
    dvc(project, "add", "-q", "shop_data")
    proc = run_train_py(project, "data=shop", "features=minimal", "dates=last_7d")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "(data.events.label=bought) must hold 0/1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all_runs(project) == []


def test_one_column_can_fill_two_roles(tmp_path: Path) -> None:
    events = _load(tmp_path, _events_frame(), click="y").events
    assert events["click"].tolist() == events["label"].tolist()
    assert events["label"].sum() > 0


def test_integer_category_codes_are_categories(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable

    (tmp_path / "data").mkdir()
    pd.DataFrame({"iid": range(30), "cat": [i % 4 for i in range(30)]}).to_parquet(
        tmp_path / "data" / "items.parquet", index=False
    )
    table = ItemsTable(path="items.parquet", id="iid", category="cat")
    items = _load(tmp_path, _events_frame(), items=table).items
    assert items is not None and set(items["category"]) == {"0", "1", "2", "3"}


def test_a_wrong_epoch_unit_names_the_right_one(tmp_path: Path) -> None:
    from replayml.config.schema import TimeUnit
    from replayml.data.load import date_range, load
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    millis = frame.assign(when=(frame["when"] - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1))
    (tmp_path / "data").mkdir()
    millis.to_csv(tmp_path / "data" / "ms.csv", index=False)
    one_file = _cfg("ms.csv", timestamp_unit=TimeUnit.s)
    with pytest.raises(DataSchemaError, match=r"timestamp_unit=s gives times outside.*unit=ms"):
        date_range(one_file, tmp_path)  # what every run asks first
    # a partitioned folder: the first file's statistics tell
    _partitions(tmp_path, millis, frame["when"].dt.strftime("%Y-%m-%d"))
    cfg = _cfg("hive", timestamp_unit=TimeUnit.us)
    first, last = date_range(cfg, tmp_path)
    with pytest.raises(DataSchemaError, match=r"timestamp_unit=us gives times outside.*unit=ms"):
        load(cfg, tmp_path, first, last)
    cfg.events.timestamp_unit = TimeUnit.ms
    assert len(load(cfg, tmp_path, first, last).events) == len(frame)


def test_epoch_units_are_checked_on_the_time_column_behind_nested_ones(tmp_path: Path) -> None:
    """A struct column before the times holds two Parquet columns: the unit check must read
    the statistics of the time column by its name, not by its position among the fields."""
    from replayml.config.schema import TimeUnit
    from replayml.data.load import date_range, load

    frame = _events_frame()
    millis = frame.assign(when=(frame["when"] - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1))
    nested = pd.concat(
        [pd.DataFrame({"device": [{"os": "ios", "build": 7}] * len(frame)}), millis], axis=1
    )
    _partitions(tmp_path, nested, frame["when"].dt.strftime("%Y-%m-%d"))
    cfg = _cfg("hive", timestamp_unit=TimeUnit.ms)
    first, last = date_range(cfg, tmp_path)
    assert len(load(cfg, tmp_path, first, last).events) == len(frame)


def test_attribute_tables_may_be_csv(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable
    from replayml.errors import DataSchemaError

    (tmp_path / "data").mkdir()
    table = pd.DataFrame({"iid": range(30), "cat": [f"c{i % 3}" for i in range(30)]})
    table.to_csv(tmp_path / "data" / "items.csv", index=False)
    items = _load(tmp_path, _events_frame(), items=ItemsTable(path="items.csv", id="iid",
                                                             category="cat")).items  # fmt: skip
    assert items is not None and items["category"].tolist() == table["cat"].tolist()
    table.to_json(tmp_path / "data" / "items.json")
    with pytest.raises(
        DataSchemaError, match=r"neither .parquet nor .csv \(or .csv.gz\); .*data.items.path"
    ):
        _load(tmp_path, _events_frame(), items=ItemsTable(path="items.json", id="iid"))


def test_a_window_without_events_says_so(project: Path) -> None:
    import shutil

    from replayml.errors import ConfigError, DataVersionError

    # the validation day (the day before the last) is deleted from the versioned data
    gone = sorted((project / "data" / "events").glob("date=*"))[-2]
    shutil.rmtree(gone)
    with pytest.raises(DataVersionError, match=f"1 of the 60 files of data/events in the data "
                       f"version of data.dvc .*: data/events/{gone.name}/part-0.parquet \\(a "
                       f"deleted partition"):  # fmt: skip
        train(project, ["features=minimal"])
    # versioned without it (gaps happen in exported logs): the window has no events
    dvc(project, "add", "-q", "data")
    with pytest.raises(ConfigError, match="no events on those days"):
        train(project, ["features=minimal"])
    assert all_runs(project) == []


def test_partitions_by_another_day_than_the_times_lose_no_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from replayml.data.load import load

    frame = _events_frame()
    local_day = (frame["when"] + pd.Timedelta(hours=3)).dt.strftime("%Y-%m-%d")  # UTC+3 days
    _partitions(tmp_path, frame, local_day)
    cfg = _cfg("hive")
    start, end = pd.Timestamp("2025-03-03").date(), pd.Timestamp("2025-03-06").date()
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        events = load(cfg, tmp_path, start, end).events
    assert len(events) == int(frame["when"].between("2025-03-03", "2025-03-07").sum())
    assert caplog.text == ""  # the partitions next to the window are read: nothing is lost


def test_categorical_columns_load_as_their_values(tmp_path: Path) -> None:
    """Frames written from pandas categoricals (Parquet dictionaries) load like plain ones."""
    from replayml.config.schema import ItemsTable
    from replayml.data.load import load

    frame = _events_frame().assign(uid=lambda f: "u" + f["uid"].astype(str))
    plain = _load(tmp_path, frame).events
    as_categories = frame.astype({"uid": "category", "iid": "category"})
    categorical = _load(tmp_path, as_categories, "categorical.parquet").events
    pd.testing.assert_frame_equal(categorical, plain)
    # a partitioned folder: each file has its own dictionary
    days = frame["when"].dt.strftime("%Y-%m-%d")
    _partitions(tmp_path, as_categories, days)
    start, end = pd.Timestamp("2025-03-02").date(), pd.Timestamp("2025-03-05").date()
    hive = load(_cfg("hive"), tmp_path, start, end).events

    def ordered(f: pd.DataFrame) -> pd.DataFrame:  # partitions are read day by day
        return f.sort_values(list(f.columns), kind="stable", ignore_index=True)

    pd.testing.assert_frame_equal(ordered(hive), ordered(plain))
    items = pd.DataFrame({"iid": range(30), "cat": [f"c{i % 3}" for i in range(30)]})
    items.astype({"iid": "category", "cat": "category"}).to_parquet(
        tmp_path / "data" / "items.parquet", index=False
    )
    table = ItemsTable(path="items.parquet", id="iid", category="cat")
    loaded = _load(tmp_path, frame, items=table).items
    assert loaded is not None and loaded["item_id"].tolist() == list(range(30))
    assert loaded["category"].tolist() == items["cat"].tolist()


def test_a_ranking_group_too_large_for_lightgbm_fails_before_any_run(project: Path) -> None:
    from replayml.errors import ConfigError

    events = _shop_events()
    # guest traffic: one anonymous user id with 10,500 impressions on one training day
    day = pd.Timestamp("2025-01-25")
    guest = pd.DataFrame(
        {
            "visitor": "guest",
            "product": np.arange(10_500) % 120,
            "seen_at": day + pd.to_timedelta(np.arange(10_500), "s"),
            "bought": (np.arange(10_500) % 50 == 0).astype(int),
        }
    )
    _add_shop(project, pd.concat([events, guest]))
    args = ["data=shop", "features=minimal", "dates=last_7d", "model=lgbm_ranker"]
    with pytest.raises(ConfigError, match=r"1 user-day\(s\) of the train window .* 10500\b.*"
                       r"preprocessing.bot_max_events_per_day \(now None"):  # fmt: skip
        train(project, [*args, "preprocessing=none"])
    assert all_runs(project) == []
    train(project, [*args, "preprocessing=none", "preprocessing.bot_max_events_per_day=1000"])
    assert [r.info.status for r in all_runs(project)] == ["FINISHED"]


def test_attribute_tables_must_share_the_events_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from replayml.config.schema import ItemsTable
    from replayml.errors import DataSchemaError

    frame = _events_frame().assign(iid=lambda f: "SKU-" + f["iid"].astype(str))
    (tmp_path / "data").mkdir()
    table = ItemsTable(path="items.parquet", id="iid", category="cat")

    def items(ids: list[str]) -> None:
        cats = [f"c{i % 3}" for i in range(len(ids))]
        pd.DataFrame({"iid": ids, "cat": cats}).to_parquet(tmp_path / "data" / "items.parquet")

    items([f" sku-{i} " for i in range(30)])  # another spelling of every id
    with pytest.raises(DataSchemaError, match=r"matches none of the 30 ids .*'SKU-\d+' in the "
                       r"events, ' sku-0 ' in the table.*normalise"):  # fmt: skip
        _load(tmp_path, frame, items=table)
    items([f"SKU-{i}" for i in range(10)] + [f"sku-{i}" for i in range(10, 30)])
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        loaded = _load(tmp_path, frame, items=table).events
    assert "holds only 33% of the 30 ids in the events" in caplog.text
    assert len(loaded) > 0
    caplog.clear()
    items([f"SKU-{i}" for i in range(30)])
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        _load(tmp_path, frame, items=table)
    assert "holds only" not in caplog.text


def test_csv_ids_are_read_as_text(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable

    frame = _events_frame(n=3_000)
    ids = frame["iid"].astype(str)
    sevens = frame.index[frame["iid"] == 7]
    ids[sevens[::2]] = "0007"  # another product than '7'
    in_window = frame.index[frame["when"].between("2025-03-02", "2025-03-05")]
    ids[in_window[-1]] = "N156"  # a later id that is not a number, below pyarrow's first rows
    (tmp_path / "data").mkdir()
    pd.DataFrame({"iid": range(30), "cat": [f"c{i % 3}" for i in range(30)]}).to_parquet(
        tmp_path / "data" / "items.parquet", index=False
    )
    table = ItemsTable(path="items.parquet", id="iid", category="cat")
    loaded = _load(tmp_path, frame.assign(iid=ids), "events.csv", items=table)
    events, items = loaded.events, loaded.items
    assert {"0007", "7", "N156"} <= set(events["item_id"])
    # integer ids of a Parquet table match the CSV's as their text
    assert items is not None and items["item_id"].tolist() == [str(i) for i in range(30)]


def _write_hive(root: Path, frame: pd.DataFrame) -> None:
    _partitions(root, frame, frame["when"].dt.strftime("%Y-%m-%d"))


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ("zero_bytes", r"cannot read .*date=2025-03-03/part-1.parquet .*not a readable Parquet "
                       r"file.*dvc add"),
        ("drift", r"do not share one schema: column 'when' is timestamp\[.s\] in .*date=2025-03-"
                  r"02/part-0.parquet but timestamp\[.s, tz=UTC\] in .*date=2025-03-0[345]"),
        ("late_precision", r"cannot read .*events.csv.*types a CSV column from its first rows"),
    ],
)  # fmt: skip
def test_unreadable_files_are_named(tmp_path: Path, spoil: str, message: str) -> None:
    from replayml.data.load import date_range, load
    from replayml.errors import DataSchemaError

    frame = _events_frame(n=80_000 if spoil == "late_precision" else 2_000)  # > 1 CSV block
    start, end = pd.Timestamp("2025-03-02").date(), pd.Timestamp("2025-03-05").date()
    cfg = _cfg("hive")
    if spoil == "late_precision":  # times gain milliseconds after pyarrow's first block
        when = frame["when"].dt.strftime("%Y-%m-%dT%H:%M:%S")
        when.iloc[-1] = when.iloc[-1] + ".250"
        (tmp_path / "data").mkdir()
        frame.assign(when=when).to_csv(tmp_path / "data" / "events.csv", index=False)
        with pytest.raises(DataSchemaError, match=message):
            date_range(_cfg("events.csv"), tmp_path)
        return
    day = frame["when"].dt.strftime("%Y-%m-%d")
    if spoil == "zero_bytes":
        _write_hive(tmp_path, frame)
        (tmp_path / "data" / "hive" / "date=2025-03-03" / "part-1.parquet").touch()
    else:  # later days' times became zone-aware
        later = frame["when"].dt.tz_localize("UTC").where(day > "2025-03-02")
        _write_hive(tmp_path, frame[day <= "2025-03-02"])
        _write_hive(tmp_path, frame[day > "2025-03-02"].assign(when=later.dropna()))
    with pytest.raises(DataSchemaError, match=message):
        load(cfg, tmp_path, start, end)


def test_empty_files_in_partitions_are_skipped(tmp_path: Path) -> None:
    from replayml.data.load import load

    frame = _events_frame()
    _write_hive(tmp_path, frame)
    # an empty frame written by pandas: its columns have no values, so no types (double)
    empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in frame.columns})
    empty.to_parquet(tmp_path / "data" / "hive" / "date=2025-03-02" / "empty.parquet")
    start, end = pd.Timestamp("2025-03-02").date(), pd.Timestamp("2025-03-05").date()
    events = load(_cfg("hive"), tmp_path, start, end).events
    assert len(events) == int(frame["when"].between("2025-03-02", "2025-03-06").sum())


def test_one_item_column_can_fill_two_roles(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable

    (tmp_path / "data").mkdir()
    table = pd.DataFrame({"iid": range(30), "zone": [f"z{i % 4}" for i in range(30)]})
    table.to_parquet(tmp_path / "data" / "items.parquet", index=False)
    roles = ItemsTable(path="items.parquet", id="iid", category="zone", region="zone")
    items = _load(tmp_path, _events_frame(), items=roles).items
    assert items is not None
    assert items["category"].tolist() == items["item_region"].tolist() == table["zone"].tolist()


def test_more_time_and_number_shapes_load(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable, TimeUnit
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    native = _load(tmp_path, frame).events
    as_text = native.astype({"user_id": str, "item_id": str})  # a CSV's ids are text
    # float epoch seconds, as `time.time()` writes them (fractions of a second kept)
    seconds = (frame["when"] - pd.Timestamp(0)) / pd.Timedelta(seconds=1) + 0.25
    floats = _load(tmp_path, frame.assign(when=seconds), timestamp_unit=TimeUnit.s).events
    shifted = native.assign(ts=native["ts"] + pd.Timedelta(milliseconds=250))
    pd.testing.assert_frame_equal(floats, shifted)
    with pytest.raises(DataSchemaError, match="holds numbers .*timestamp_unit"):
        _load(tmp_path, frame.assign(when=seconds))
    # days without a time of day: each at its midnight
    days = _load(tmp_path, frame.assign(when=frame["when"].dt.strftime("%Y-%m-%d")), "d.csv")
    assert days.events["ts"].tolist() == days.events["day"].tolist()
    assert days.events["day"].tolist() == as_text["day"].tolist()
    # a gzip-compressed CSV
    pd.testing.assert_frame_equal(_load(tmp_path, frame, "events.csv.gz").events, as_text)
    # a SQL export's DECIMAL prices are numbers
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    prices = [decimal.Decimal(f"{i}.25") for i in range(30)]
    pq.write_table(
        pa.table({"iid": range(30), "price": pa.array(prices, pa.decimal128(10, 2))}),
        tmp_path / "data" / "items.parquet",
    )
    table = ItemsTable(path="items.parquet", id="iid", price="price")
    items = _load(tmp_path, frame, items=table).items
    assert items is not None and items["price"].tolist() == [i + 0.25 for i in range(30)]
    # integer ids that became floats in pandas: the error says how to store them
    with pytest.raises(DataSchemaError, match=r"'uid' .*found double; integer ids become floats"
                       r".*astype\('int64'\)"):  # fmt: skip
        _load(tmp_path, frame.astype({"uid": "float64"}))


def test_partition_folder_names(tmp_path: Path) -> None:
    from replayml.data.load import date_range, load
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    # pandas' partition_cols on a datetime column names folders by the midnight, URL-quoted
    day = frame["when"].dt.floor("D")
    frame.assign(date=day).to_parquet(tmp_path / "hive", partition_cols=["date"])
    assert (tmp_path / "hive" / "date=2025-03-02%2000%3A00%3A00.000000").is_dir()
    (tmp_path / "data").mkdir()
    (tmp_path / "hive").rename(tmp_path / "data" / "hive")
    first, last = date_range(_cfg("hive"), tmp_path)
    assert (first, last) == (day.min().date(), day.max().date())
    assert len(load(_cfg("hive"), tmp_path, first, last).events) == len(frame)
    # other layouts: the error lists what it found
    (tmp_path / "data" / "dt").mkdir()
    (tmp_path / "data" / "dt" / "dt=2025-03-02").mkdir()
    with pytest.raises(DataSchemaError, match=r"no `date=YYYY-MM-DD/\*.parquet` partitions "
                       r"\(found: dt=2025-03-02/\); write one folder per day"):  # fmt: skip
        date_range(_cfg("dt"), tmp_path)


@pytest.mark.parametrize(
    "stray",
    ["dt=2025-03-09/part-0.parquet", "date=2025-3-9/part-0.parquet", "late.parquet",
     "{a day}/part-1.pq"],
)  # fmt: skip
def test_entries_of_a_partitioned_folder_no_load_would_read_are_named(
    tmp_path: Path, stray: str
) -> None:
    """A new day's folder named wrongly would be left out: the run would train on yesterday's
    window without a word."""
    from replayml.data.load import date_range
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    _partitions(tmp_path, frame, frame["when"].dt.floor("D"))
    stray = stray.replace(
        "{a day}", sorted(p.name for p in (tmp_path / "data" / "hive").iterdir())[2]
    )
    target = tmp_path / "data" / "hive" / stray
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.head(10).to_parquet(target)
    with pytest.raises(DataSchemaError, match="would not be read") as caught:
        date_range(_cfg("hive"), tmp_path)
    assert stray.removesuffix("/part-0.parquet") in str(caught.value)
    # named as not data (a leading `_`), the entry is skipped as the README says
    entry = target if stray.endswith(".pq") else tmp_path / "data" / "hive" / stray.split("/")[0]
    entry.rename(entry.parent / ("_" + entry.name))
    assert date_range(_cfg("hive"), tmp_path)[1] == frame["when"].max().date()


def test_a_stray_late_event_is_named_as_the_windows_anchor(project: Path) -> None:
    from replayml.errors import ConfigError

    events = _shop_events()
    stray = events.tail(1).assign(seen_at=pd.Timestamp("2031-06-01 12:00"))
    _add_shop(project, pd.concat([events, stray]))
    args = ["data=shop", "features=minimal", "preprocessing=none", "dates=last_7d"]
    with pytest.raises(ConfigError, match=r"no events on those days .*data's last day, "
                       r"2031-06-01: if that is a stray event, set dates.anchor"):  # fmt: skip
        train(project, args)
    train(project, [*args, "dates.anchor=2025-01-30"])
    assert [r.info.status for r in all_runs(project)] == ["FINISHED"]


@pytest.mark.parametrize("fmt", ["events.csv", "events.parquet"])
def test_blank_ids_are_empty_ids(tmp_path: Path, fmt: str) -> None:
    from replayml.errors import DataSchemaError

    frame = _events_frame().assign(uid=lambda f: "u" + f["uid"].astype(str))
    frame.loc[frame.index[::10], "uid"] = "" if fmt.endswith(".csv") else "  "
    with pytest.raises(DataSchemaError, match=r"'uid' \(data.events.user=uid\) has \d+ empty"):
        _load(tmp_path, frame, fmt)


def test_more_shapes_are_named_or_read(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable, TimeUnit
    from replayml.data.load import date_range, load
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    # a mistyped time column of a CSV: named like any missing column, not a broken file
    (tmp_path / "data").mkdir()
    frame.to_csv(tmp_path / "data" / "e.csv", index=False)
    with pytest.raises(DataSchemaError, match=r"no column 'seen' \(data.events.timestamp=seen\)"):
        cfg = _cfg("e.csv")
        cfg.events.timestamp = "seen"
        date_range(cfg, tmp_path)
    # items listed on days (no time of day)
    created = [f"2025-02-{1 + i % 20:02d}" for i in range(30)]
    pd.DataFrame({"iid": range(30), "listed": created}).to_csv(
        tmp_path / "data" / "items.csv", index=False
    )
    table = ItemsTable(path="items.csv", id="iid", created="listed")
    items = _load(tmp_path, frame, items=table).items
    assert items is not None and items["created"].tolist() == pd.to_datetime(created).tolist()
    # epoch seconds, then milliseconds from one day on: the first file in the wrong unit named
    seconds = (frame["when"] - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    epoch = seconds.where(frame["when"] < "2025-03-04", seconds * 1000)
    _partitions(tmp_path, frame.assign(when=epoch), frame["when"].dt.strftime("%Y-%m-%d"))
    cfg = _cfg("hive", timestamp_unit=TimeUnit.s)
    start, end = pd.Timestamp("2025-03-02").date(), pd.Timestamp("2025-03-05").date()
    with pytest.raises(DataSchemaError, match=r"date=2025-03-04/part-0.parquet: .*unit=ms"):
        load(cfg, tmp_path, start, end)


def test_a_dataset_without_its_dvc_file_says_which_key_to_set(project: Path) -> None:
    from replayml.errors import DataVersionError

    _add_shop(project, _shop_events())
    conf = project / "conf" / "data" / "shop.yaml"
    conf.write_text(conf.read_text().replace("dvc_file: shop_data.dvc\n", ""))  # forgotten
    with pytest.raises(DataVersionError, match=r"set data.dvc_file to the .dvc file that tracks "
                       r"shop_data \(e.g. data.dvc_file: shop_data.dvc after `dvc add "
                       r"shop_data`\)"):  # fmt: skip
        train(project, ["data=shop", "features=minimal", "dates=last_7d"])
    assert all_runs(project) == []


def test_a_dvc_file_tracking_one_file_says_to_track_its_folder(project: Path) -> None:
    from replayml.errors import DataVersionError

    (project / "shop_data").mkdir()
    _shop_events().to_csv(project / "shop_data" / "events.csv", index=False)
    dvc(project, "add", "-q", "shop_data/events.csv")  # the file, not its folder
    conf = SHOP_CONF.replace("root: shop_data", "root: shop_data/events.csv")
    conf = conf.replace("dvc_file: shop_data.dvc", "dvc_file: shop_data/events.csv.dvc")
    (project / "conf" / "data" / "shop.yaml").write_text(conf)
    with pytest.raises(DataVersionError) as caught:
        train(project, ["data=shop", "features=minimal", "dates=last_7d"])
    said = str(caught.value)
    assert "shop_data/events.csv.dvc tracks a single file" in said, said
    assert "`dvc add shop_data`" in said and "data.events.path=events.csv" in said
    assert "dvc pull" not in said  # the object is in the cache: pulling cannot help
    assert all_runs(project) == []


def test_hidden_files_in_partitions_are_not_data(tmp_path: Path) -> None:
    from replayml.data.load import load

    frame = _events_frame()
    _write_hive(tmp_path, frame)
    folder = tmp_path / "data" / "hive" / "date=2025-03-03"
    (folder / "._part-0.parquet").write_bytes(b"\x00\x05\x16\x07 macOS metadata")  # AppleDouble
    (folder / "_committed_123.parquet").write_bytes(b"")
    start, end = pd.Timestamp("2025-03-02").date(), pd.Timestamp("2025-03-05").date()
    events = load(_cfg("hive"), tmp_path, start, end).events
    assert len(events) == int(frame["when"].between("2025-03-02", "2025-03-06").sum())


def test_day_folders_without_files_of_their_own_are_named(tmp_path: Path) -> None:
    """Days written by hour too (`date=D/hour=H/`) or left empty used to be dropped: the
    windows then ended on another day."""
    from replayml.data.load import date_range, load
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    day = frame["when"].dt.strftime("%Y-%m-%d")
    _write_hive(tmp_path, frame[day < "2025-03-09"])
    late = frame[day >= "2025-03-09"]
    late.assign(date=day, hour=late["when"].dt.hour).to_parquet(
        tmp_path / "data" / "hive", partition_cols=["date", "hour"], index=False
    )
    nested = (
        r"2 partition folder\(s\) of .*/data/hive do not hold their day's events as "
        r"Parquet files directly: "
        r"date=2025-03-09 \(holds hour=0/, hour=1/, hour=10/ and 21 more\), date=2025-03-10 "
        r"\(holds .*\); write one level of files per day, `date=YYYY-MM-DD/\*.parquet` \(e.g. "
        r"pandas `to_parquet\(path, partition_cols=\['date'\]\)` with the day only"
    )
    with pytest.raises(DataSchemaError, match=nested):
        date_range(_cfg("hive"), tmp_path)
    start, end = pd.Timestamp("2025-03-02").date(), pd.Timestamp("2025-03-05").date()
    with pytest.raises(DataSchemaError, match=nested):  # a window of flat days too
        load(_cfg("hive"), tmp_path, start, end)
    # every day nested: the same error, not a refusal listing the very folders it wants
    frame.assign(date=day, hour=frame["when"].dt.hour).to_parquet(
        tmp_path / "data" / "by_hour", partition_cols=["date", "hour"], index=False
    )
    every_day = r"10 partition folder\(s\) .*date=2025-03-01 \(holds hour=0/.* and 7 more; write"
    with pytest.raises(DataSchemaError, match=every_day):
        date_range(_cfg("by_hour"), tmp_path)
    # a day with files of its own and a sub-folder: the sub-folder's rows would be lost
    shutil.rmtree(tmp_path / "data" / "hive")
    _write_hive(tmp_path, frame)
    extra = tmp_path / "data" / "hive" / "date=2025-03-05" / "hour=23"
    extra.mkdir()
    frame.head(5).to_parquet(extra / "part-0.parquet", index=False)
    with pytest.raises(DataSchemaError, match=r"1 partition folder\(s\) .*: date=2025-03-05 "
                       r"\(holds hour=23/, part-0.parquet\); write one level"):  # fmt: skip
        date_range(_cfg("hive"), tmp_path)
    shutil.rmtree(extra)
    # an empty day folder (its files deleted) is not a day without a word
    (tmp_path / "data" / "hive" / "date=2025-03-11").mkdir()
    with pytest.raises(DataSchemaError, match=r"1 partition folder\(s\) .*: date=2025-03-11 "
                       r"\(empty\); remove an empty folder \(a day without events needs none\), "
                       r"or restore its files"):  # fmt: skip
        date_range(_cfg("hive"), tmp_path)


def test_zone_aware_partitions_by_local_date_load_like_one_file(tmp_path: Path) -> None:
    """Partitions named by the Berlin date hold an hour of the next UTC day: the windows are
    UTC days, so the partitions next to a window are read too, and the data's range comes
    from its times, not from the folder names."""
    from replayml.data.load import date_range, event_files, load

    frame = _events_frame(n=4_000)
    berlin = frame.assign(when=frame["when"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin"))
    (tmp_path / "data").mkdir()
    berlin.to_parquet(tmp_path / "data" / "events.parquet", index=False)
    local_day = berlin["when"].dt.strftime("%Y-%m-%d")
    berlin.assign(date=local_day).to_parquet(
        tmp_path / "data" / "hive", partition_cols=["date"], index=False
    )
    assert (tmp_path / "data" / "hive" / "date=2025-03-11").is_dir()  # UTC 23:00 onwards
    one, hive = _cfg("events.parquet"), _cfg("hive")
    first, last = date_range(one, tmp_path)
    assert (first, last) == (pd.Timestamp("2025-03-01").date(), pd.Timestamp("2025-03-10").date())
    assert date_range(hive, tmp_path) == (first, last)

    def ordered(f: pd.DataFrame) -> pd.DataFrame:  # partitions are read day by day
        return f.sort_values(list(f.columns), kind="stable", ignore_index=True)

    for start, end in ((first, first), (last, last), (first, last)):
        from_files = load(hive, tmp_path, start, end).events
        pd.testing.assert_frame_equal(
            ordered(from_files), ordered(load(one, tmp_path, start, end).events)
        )
        assert len(from_files) == int(frame["when"].dt.floor("D").between(
            pd.Timestamp(start), pd.Timestamp(end)).sum())  # fmt: skip
    # times in UTC (or naive) read exactly the window's partitions, as before
    utc = frame.assign(when=frame["when"].dt.tz_localize("UTC"))
    utc.assign(date=frame["when"].dt.strftime("%Y-%m-%d")).to_parquet(
        tmp_path / "data" / "utc", partition_cols=["date"], index=False
    )
    read = event_files(_cfg("utc"), tmp_path, last, last)
    assert [f.parent.name for f in read] == ["date=2025-03-10"]
    assert [f.parent.name for f in event_files(hive, tmp_path, last, last)] == [
        "date=2025-03-09", "date=2025-03-10", "date=2025-03-11"
    ]  # fmt: skip


HIVE_CONF = SHOP_CONF.replace("shop", "shop_hive").replace("events.csv", "events")


def test_a_zone_aware_partitioned_dataset_trains_like_one_file(project: Path) -> None:
    """The repro: a shop log in Berlin time partitioned by the Berlin date. The last folder
    holds the last UTC day's final hour; it used to be taken as the test day (0 rows)."""
    events = _shop_events()
    seen = events["seen_at"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    berlin = events.assign(seen_at=seen)
    (project / "shop_data").mkdir()
    berlin.to_parquet(project / "shop_data" / "events.parquet", index=False)
    (project / "conf" / "data" / "shop.yaml").write_text(
        SHOP_CONF.replace("events.csv", "events.parquet")
    )
    dvc(project, "add", "-q", "shop_data")
    (project / "shop_hive_data").mkdir()
    berlin.assign(date=seen.dt.strftime("%Y-%m-%d")).to_parquet(
        project / "shop_hive_data" / "events", partition_cols=["date"], index=False
    )
    (project / "conf" / "data" / "shop_hive.yaml").write_text(HIVE_CONF)
    dvc(project, "add", "-q", "shop_hive_data")
    args = ["features=minimal", "preprocessing=none", "dates=last_7d"]
    train(project, ["data=shop", *args])
    train(project, ["data=shop_hive", *args])
    one, hive = sorted(all_runs(project), key=lambda r: r.data.tags["replayml.dataset"])
    assert hive.data.tags["replayml.dates.test_end"] == "2025-01-30"
    for key in ("dates.train_start", "dates.test_end", "rows.train", "rows.valid", "rows.test"):
        assert hive.data.tags[f"replayml.{key}"] == one.data.tags[f"replayml.{key}"], key


def test_placeholder_epoch_times_are_counted_not_blamed_on_the_unit(tmp_path: Path) -> None:
    from replayml.config.schema import TimeUnit
    from replayml.data.load import date_range, load
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    # epoch seconds with a few 0s for unknown times: not a wrong unit
    seconds = (frame["when"] - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    zeros = seconds.where(frame.index % 400 > 0, 0)
    (tmp_path / "data").mkdir()
    frame.assign(when=zeros).to_parquet(tmp_path / "data" / "epoch.parquet", index=False)
    placeholders = (
        r"'when' \(data.events.timestamp=when\) read with data.events.timestamp_unit=s: 5 of "
        r"2000 rows give times outside 1990..2100 \(e.g. 0\), placeholders for unknown times\? "
        r"Drop or fill those rows"
    )
    with pytest.raises(DataSchemaError, match=placeholders):
        date_range(_cfg("epoch.parquet", timestamp_unit=TimeUnit.s), tmp_path)
    # a partitioned folder: a file's statistics tell, then its rows
    _partitions(tmp_path, frame.assign(when=zeros), frame["when"].dt.strftime("%Y-%m-%d"))
    start, end = pd.Timestamp("2025-03-01").date(), pd.Timestamp("2025-03-10").date()
    with pytest.raises(DataSchemaError, match=r"date=2025-03-\d\d/part-0.parquet: .* 1 of \d+ "
                       r"rows give times outside 1990..2100 \(e.g. 0\)"):  # fmt: skip
        load(_cfg("hive", timestamp_unit=TimeUnit.s), tmp_path, start, end)
    # milliseconds read as seconds, with the same zeros: the unit that fits most is named
    millis = _cfg("epoch.parquet", timestamp_unit=TimeUnit.s)
    frame.assign(when=zeros * 1000).to_parquet(tmp_path / "data" / "epoch.parquet", index=False)
    with pytest.raises(DataSchemaError, match=r"most times fit data.events.timestamp_unit=ms: "
                       r"set it; even then 5 of 2000 rows give times outside"):  # fmt: skip
        date_range(millis, tmp_path)


def test_text_where_numbers_belong_shows_its_values_and_a_fix(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable
    from replayml.errors import DataSchemaError

    frame = _events_frame()
    # outcomes as text: the values found and the line that maps them
    yes_no = frame.assign(y=frame["y"].map({0: "no", 1: "yes"}))
    with pytest.raises(DataSchemaError, match=r"'y' \(data.events.label=y\) should be 0/1 or "
                       r"true/false, found (large_)?string; it holds text \('no', 'yes'\): map "
                       r"it to 0/1 in the data, e.g. `df\[\"y\"\] = \(df\[\"y\"\] == \"yes\"\)"
                       r"\.astype\(\"int8\"\)`"):  # fmt: skip
        _load(tmp_path, yes_no)
    # prices as text: an example and pd.to_numeric
    prices = ["12.50", "1,299.00", "7"] * 10
    pd.DataFrame({"iid": range(30), "price": prices}).to_parquet(
        tmp_path / "data" / "items.parquet", index=False
    )
    table = ItemsTable(path="items.parquet", id="iid", price="price")
    with pytest.raises(DataSchemaError, match=r"'price' \(data.items.price=price\) should be "
                       r"number, found (large_)?string; it holds numbers as text \(e.g. "
                       r"'1,299.00'\): convert them in the data, e.g. `df\[\"price\"\] = "
                       r"pd.to_numeric\(df\[\"price\"\]\)`"):  # fmt: skip
        _load(tmp_path, frame, items=table)


def test_a_pattern_as_a_data_path_is_named(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable
    from replayml.data.load import date_range
    from replayml.errors import ConfigError

    frame = _events_frame()
    _write_hive(tmp_path, frame)
    with pytest.raises(ConfigError, match=r"data.events.path=hive/\*.parquet is a pattern, but "
                       r"data paths are a file or a folder, not a pattern; .*\(e.g. "
                       r"data.events.path=hive\)"):  # fmt: skip
        date_range(_cfg("hive/*.parquet"), tmp_path)
    with pytest.raises(ConfigError, match=r"data.items.path=items/\*.parquet is a pattern"):
        _load(tmp_path, frame, items=ItemsTable(path="items/*.parquet", id="iid"))
