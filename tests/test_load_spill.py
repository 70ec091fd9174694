"""Partitions whose folders are not the days of their times: a shop's export partitioned by the
Berlin date, with times as epoch milliseconds (UTC instants, no zone in the column's type)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import all_runs, dvc, train

START, END = date(2024, 6, 10), date(2024, 6, 19)  # UTC days; Berlin is UTC+2 in June


def _events(n: int = 5_000, seed: int = 7, first: date = START, days: int = 10) -> pd.DataFrame:
    """Orders over `days` UTC days, a quarter of them at 22:00-24:00 UTC (the next Berlin day),
    the time as epoch milliseconds."""
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, days * 86_400, n)
    late = seconds[: n // 4] // 86_400 * 86_400 + rng.integers(79_200, 86_400, n // 4)
    seconds[: n // 4] = late
    when = pd.Timestamp(first) + pd.to_timedelta(seconds, "s")
    return pd.DataFrame(
        {
            "uid": rng.integers(0, 80, n),
            "sku": [f"sku-{i}" for i in rng.integers(0, 50, n)],
            "ms": (when - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1),
            "bought": (rng.random(n) < 0.2).astype("int64"),
        }
    ).sort_values("ms", ignore_index=True)


def _utc(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["ms"], unit="ms")


def _berlin_days(frame: pd.DataFrame) -> pd.Series:
    return _utc(frame).dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin").dt.strftime("%Y-%m-%d")


def _write(folder: Path, frame: pd.DataFrame, days: pd.Series, statistics: bool = True) -> None:
    """One `date=` folder per value of `days`, written as an export job does."""
    for day, rows in frame.groupby(days):
        part = folder / f"date={day}"
        part.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(rows, preserve_index=False)
        pq.write_table(table, part / "part-0.parquet", write_statistics=statistics)


def _cfg(path: str):  # noqa: ANN202
    from replayml.config.schema import DataConfig, EventsTable, TimeUnit

    events = EventsTable(path=path, user="uid", item="sku", timestamp="ms",
                         timestamp_unit=TimeUnit.ms, label="bought")  # fmt: skip
    return DataConfig(name="shop", events=events)  # type: ignore[call-arg]


def _one_file(root: Path, frame: pd.DataFrame) -> None:
    (root / "data").mkdir(exist_ok=True)
    frame.to_parquet(root / "data" / "one.parquet", index=False)


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:  # partitions are read day by day
    return frame.sort_values(list(frame.columns), kind="stable", ignore_index=True)


def _rows(frame: pd.DataFrame, start: date, end: date) -> int:
    return int(_utc(frame).dt.floor("D").between(pd.Timestamp(start), pd.Timestamp(end)).sum())


def _folders(cfg, root: Path, start: date, end: date) -> list[str]:  # noqa: ANN001
    from replayml.data.load import event_files

    return [f.parent.name for f in event_files(cfg, root, start, end)]


@pytest.mark.parametrize("statistics", [True, False], ids=["footers", "no-statistics"])
def test_berlin_date_partitions_of_epoch_times_load_like_one_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, statistics: bool
) -> None:
    """The last folder holds only the last UTC day's final two hours: it used to be taken as
    the last day (a test window of 0 rows), and a window ending on the last UTC day missed
    those hours, silently. Files written without statistics have their times read."""
    from replayml.data.load import date_range, load

    frame = _events()
    _one_file(tmp_path, frame)
    _write(tmp_path / "data" / "events", frame, _berlin_days(frame), statistics)
    assert (tmp_path / "data" / "events" / f"date={END + timedelta(days=1)}").is_dir()
    hive, one = _cfg("events"), _cfg("one.parquet")
    assert date_range(one, tmp_path) == (START, END)
    assert date_range(hive, tmp_path) == (START, END)  # not the last folder's name
    middle = (date(2024, 6, 14), date(2024, 6, 16))
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        for start, end in ((END, END), (START, START), middle, (START, END)):
            events = load(hive, tmp_path, start, end).events
            assert len(events) == _rows(frame, start, end), (start, end)
            expected = load(one, tmp_path, start, end).events
            pd.testing.assert_frame_equal(_ordered(events), _ordered(expected))
    assert caplog.text == ""  # nothing is lost, so nothing is reported
    assert _folders(hive, tmp_path, END, END) == [
        "date=2024-06-18", "date=2024-06-19", "date=2024-06-20"
    ]  # fmt: skip


@pytest.mark.parametrize("times", ["epoch-ms", "naive", "utc"])
def test_utc_day_partitions_read_only_their_days(tmp_path: Path, times: str) -> None:
    """Folders that are the days of their times read exactly the window's folders, as before,
    and the data's range is the folder names."""
    from replayml.config.schema import DataConfig, EventsTable
    from replayml.data.load import date_range, load

    epoch = _events()
    utc = _utc(epoch)
    frame, cfg = epoch, _cfg("events")
    if times != "epoch-ms":
        frame = epoch.assign(ms=utc.dt.tz_localize("UTC") if times == "utc" else utc)
        events = EventsTable(path="events", user="uid", item="sku", timestamp="ms",
                             label="bought")  # fmt: skip
        cfg = DataConfig(name="shop", events=events)  # type: ignore[call-arg]
    _write(tmp_path / "data" / "events", frame, utc.dt.strftime("%Y-%m-%d"))
    assert date_range(cfg, tmp_path) == (START, END)
    for day in (START, date(2024, 6, 14), END):
        assert _folders(cfg, tmp_path, day, day) == [f"date={day}"]
        assert len(load(cfg, tmp_path, day, day).events) == _rows(epoch, day, day)


def test_utc_folders_then_berlin_folders(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An export that switched from UTC days to Berlin days: a window whose folders and their
    neighbours hold only their own days reads exactly its folders; one next to a folder that
    holds another day's rows reads one more on each side."""
    from replayml.data.load import date_range, load

    frame = _events()
    switch = pd.Timestamp("2024-06-15")
    older = _utc(frame) < switch
    days = _utc(frame).dt.strftime("%Y-%m-%d").where(older, _berlin_days(frame))
    _one_file(tmp_path, frame)
    _write(tmp_path / "data" / "events", frame, days)
    hive, one = _cfg("events"), _cfg("one.parquet")
    assert date_range(hive, tmp_path) == (START, END)
    assert _folders(hive, tmp_path, START, date(2024, 6, 12)) == [
        f"date=2024-06-{d}" for d in range(10, 13)
    ]
    # the first Berlin folder starts at the switch: only the next one holds an earlier day
    assert _folders(hive, tmp_path, date(2024, 6, 14), date(2024, 6, 14)) == ["date=2024-06-14"]
    assert _folders(hive, tmp_path, date(2024, 6, 15), date(2024, 6, 15)) == [
        "date=2024-06-14", "date=2024-06-15", "date=2024-06-16"
    ]  # fmt: skip
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        for start, end in ((START, date(2024, 6, 12)), (date(2024, 6, 14), END), (START, END)):
            events = load(hive, tmp_path, start, end).events
            expected = load(one, tmp_path, start, end).events
            pd.testing.assert_frame_equal(_ordered(events), _ordered(expected))
    assert caplog.text == ""


def test_rows_filed_days_away_are_counted_as_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the rows a window loses are reported: those of its days in a folder more than a
    day away (not the partitions' rows of the days next to it, which are read or unwanted)."""
    from replayml.data.load import load

    frame = _events()
    days = _berlin_days(frame)
    strays = frame.index[_utc(frame).dt.floor("D") == pd.Timestamp("2024-06-12")][:37]
    days[strays] = "2024-06-17"
    _write(tmp_path / "data" / "events", frame, days)
    cfg = _cfg("events")
    window = date(2024, 6, 11), date(2024, 6, 13)
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        events = load(cfg, tmp_path, *window).events
    assert len(events) == _rows(frame, *window) - 37
    assert (
        "37 events of 2024-06-11..2024-06-13 are in partitions more than a day from their "
        "times (date=2024-06-17) and are not read; partition by the UTC day of "
        "data.events.timestamp=ms to keep them"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        assert len(load(cfg, tmp_path, date(2024, 6, 12), date(2024, 6, 17)).events) == (
            _rows(frame, date(2024, 6, 12), date(2024, 6, 17))
        )
    assert caplog.text == ""


SHOP_CONF = """\
# A shop's order log, times in epoch milliseconds.
name: {name}
root: {name}_data
dvc_file: {name}_data.dvc
events:
  path: {path}
  user: uid
  item: sku
  timestamp: ms
  timestamp_unit: ms
  label: bought
items:
  path: null
users:
  path: null
"""


@pytest.mark.slow
def test_berlin_date_partitions_of_epoch_times_train_like_one_file(project: Path) -> None:
    """The repro: without dates.anchor the run used to stop on a test window of 0 rows (the
    last folder's name), and with it the test day lost its last two hours."""
    frame = _events(n=20_000, first=date(2024, 5, 21), days=30)
    for name, path in (("shop_one", "events.parquet"), ("shop_hive", "events")):
        (project / "conf" / "data" / f"{name}.yaml").write_text(
            SHOP_CONF.format(name=name, path=path)
        )
    (project / "shop_one_data").mkdir()
    frame.to_parquet(project / "shop_one_data" / "events.parquet", index=False)
    _write(project / "shop_hive_data" / "events", frame, _berlin_days(frame))
    for name in ("shop_one", "shop_hive"):
        dvc(project, "add", "-q", f"{name}_data")
    args = ["features=minimal", "preprocessing=none", "dates=last_7d"]
    train(project, ["data=shop_one", *args])
    train(project, ["data=shop_hive", *args])
    hive, one = sorted(all_runs(project), key=lambda r: r.data.tags["replayml.dataset"])
    assert hive.data.tags["replayml.dates.test_end"] == str(END)
    for key in ("dates.train_start", "dates.test_end", "rows.train", "rows.valid", "rows.test"):
        assert hive.data.tags[f"replayml.{key}"] == one.data.tags[f"replayml.{key}"], key
