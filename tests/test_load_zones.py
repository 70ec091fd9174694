"""Loading a job board's own data: partitions whose time zone changed mid-history, and the
messages for columns mapped to the wrong kind of values."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

START, END = date(2025, 3, 1), date(2025, 3, 12)


def _events(n: int = 6_000, seed: int = 11) -> pd.DataFrame:
    """Job views over 12 UTC days, many of them late in the UTC day (evenings in Berlin)."""
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 12 * 86_400, n)
    seconds[: n // 4] = seconds[: n // 4] // 86_400 * 86_400 + rng.integers(79_200, 86_400, n // 4)
    return pd.DataFrame(
        {
            "uid": rng.integers(0, 60, n),
            "job": [f"job-{i}" for i in rng.integers(0, 40, n)],
            "when": pd.Timestamp("2025-03-01") + pd.to_timedelta(seconds, "s"),
            "applied": (rng.random(n) < 0.2).astype("int64"),
        }
    )


def _cfg(path: str = "events", **tables: object):  # noqa: ANN202
    from replayml.config.schema import DataConfig, EventsTable

    events = EventsTable(path=path, user="uid", item="job", timestamp="when", label="applied")
    return DataConfig(name="jobs", events=events, **tables)  # type: ignore[arg-type]


def _write(root: Path, frame: pd.DataFrame, zone: str) -> None:
    """`frame` in `zone`, one `date=` folder per day of that zone (pandas' partitioning)."""
    when = frame["when"].dt.tz_localize("UTC").dt.tz_convert(zone)
    frame.assign(when=when, date=when.dt.strftime("%Y-%m-%d")).to_parquet(
        root / "data" / "events", partition_cols=["date"], index=False
    )


def _mixed(root: Path, frame: pd.DataFrame, switch: str = "2025-03-07") -> None:
    """Days before `switch` exported in UTC (by UTC day), later ones in Berlin time (by the
    Berlin day): the export job changed mid-history."""
    (root / "data").mkdir(exist_ok=True)
    older = frame["when"] < pd.Timestamp(switch)
    _write(root, frame[older], "UTC")
    _write(root, frame[~older], "Europe/Berlin")


def _rows(frame: pd.DataFrame, start: date, end: date) -> int:
    return int(frame["when"].dt.floor("D").between(pd.Timestamp(start), pd.Timestamp(end)).sum())


def test_partitions_in_utc_then_berlin_lose_no_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first file is UTC: the Berlin folders must still be read one day wider, or the
    UTC 23:00-24:00 rows filed under the next Berlin day are silently not read."""
    from replayml.data.load import date_range, event_files, load

    frame = _events()
    _mixed(tmp_path, frame)
    cfg = _cfg()
    assert date_range(cfg, tmp_path) == (START, END)  # not the last Berlin folder, 03-13
    with caplog.at_level("WARNING", logger="replayml.data.load"):
        for start, end in ((date(2025, 3, 8), date(2025, 3, 10)), (START, END)):
            events = load(cfg, tmp_path, start, end).events
            assert len(events) == _rows(frame, start, end), (start, end)
            assert events["day"].min() == pd.Timestamp(start)
            assert events["day"].max() == pd.Timestamp(end)
    assert caplog.text == ""
    # a window whose own folders are UTC reads the Berlin folder next to it
    last_utc = date(2025, 3, 6)
    read = [f.parent.name for f in event_files(cfg, tmp_path, last_utc, last_utc)]
    assert read == ["date=2025-03-05", "date=2025-03-06", "date=2025-03-07"]
    assert len(load(cfg, tmp_path, last_utc, last_utc).events) == _rows(frame, last_utc, last_utc)
    # far from any Berlin folder, exactly the window's folders, as before
    early = date(2025, 3, 3)
    read = [f.parent.name for f in event_files(cfg, tmp_path, early, early)]
    assert read == ["date=2025-03-03"]


def test_berlin_then_utc_and_naive_then_berlin(tmp_path: Path) -> None:
    """The other order loads the same rows; naive times next to zone-aware ones are refused,
    naming both files."""
    from replayml.data.load import date_range, load
    from replayml.errors import DataSchemaError

    frame = _events()
    (tmp_path / "data").mkdir()
    older = frame["when"] < pd.Timestamp("2025-03-07")
    _write(tmp_path, frame[older], "Europe/Berlin")
    _write(tmp_path, frame[~older], "UTC")
    cfg = _cfg()
    assert date_range(cfg, tmp_path) == (START, END)
    assert len(load(cfg, tmp_path, START, END).events) == len(frame)

    naive = tmp_path / "naive"
    (naive / "data").mkdir(parents=True)
    frame[older].assign(date=frame["when"].dt.strftime("%Y-%m-%d")).to_parquet(
        naive / "data" / "events", partition_cols=["date"], index=False
    )
    _write(naive, frame[~older], "Europe/Berlin")
    mixed = (
        r"column 'when' is timestamp\[.s\] in .*date=2025-03-0\d/.*but "
        r"timestamp\[.s, tz=Europe/Berlin\] in .*date=2025-03"
    )
    with pytest.raises(DataSchemaError, match=mixed):
        load(cfg, naive, date(2025, 3, 6), date(2025, 3, 8))


def test_ninety_utc_folders_are_read_one_a_day(tmp_path: Path) -> None:
    """Which folders a window reads comes from every file's schema: all UTC, no widening."""
    from replayml.data.load import date_range, event_files

    rng = np.random.default_rng(2)
    n = 9_000
    when = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 90 * 86_400, n), "s")
    frame = pd.DataFrame({"uid": rng.integers(0, 9, n), "job": rng.integers(0, 9, n),
                          "when": when, "applied": rng.integers(0, 2, n)})  # fmt: skip
    (tmp_path / "data").mkdir()
    _write(tmp_path, frame, "UTC")
    cfg = _cfg()
    first, last = date_range(cfg, tmp_path)
    files = event_files(cfg, tmp_path, first, last)
    assert len(files) == 90


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        (["education", "sales", "it", "health"] * 10,
         r"'price' \(data.items.price=price\) should be number, found (large_)?string; it "
         r"holds text that is not a number \(e.g. 'education'\): data.items.price probably "
         r"maps the wrong column"),
        (["12.50", "", "7", "40000"] * 10,
         r"it holds numbers as text \(e.g. '12.50', and '' for missing values\): convert them "
         r"in the data, e.g. `df\[\"price\"\] = pd.to_numeric\(df\[\"price\"\], "
         r"errors=\"coerce\"\)` \(''"),
        (["12.50", "1,299.00", "7", "80"] * 10,
         r"it holds numbers as text \(e.g. '1,299.00'\): convert them in the data, e.g. "
         r"`df\[\"price\"\] = pd.to_numeric\(df\[\"price\"\]\)` \('1,299.00' is not a number"),
        (["$1,200", "$15.00", "$3,499.99", "12,5"] * 10,
         r"it holds numbers as text \(e.g. '\$1,200'\): .* write a decimal comma as a point"),
    ],
    ids=["words", "blanks", "thousands", "formatted"],
)  # fmt: skip
def test_text_where_a_number_belongs_says_what_it_holds(
    tmp_path: Path, prices: list[str], message: str
) -> None:
    from replayml.config.schema import ItemsTable
    from replayml.data.load import load
    from replayml.errors import DataSchemaError

    frame = _events()
    (tmp_path / "data").mkdir()
    _write(tmp_path, frame, "UTC")
    ids = [f"job-{i}" for i in range(40)]
    pd.DataFrame({"job": ids, "price": prices}).to_parquet(tmp_path / "data" / "items.parquet")
    cfg = _cfg(items=ItemsTable(path="items.parquet", id="job", price="price"))
    with pytest.raises(DataSchemaError, match=message) as caught:
        load(cfg, tmp_path, START, END)
    if prices[0] == "education":
        assert "numbers as text" not in str(caught.value)


def test_item_ids_of_another_type_show_one_of_each(tmp_path: Path) -> None:
    from replayml.config.schema import ItemsTable
    from replayml.data.load import load
    from replayml.errors import DataSchemaError

    frame = _events()
    (tmp_path / "data").mkdir()
    _write(tmp_path, frame, "UTC")
    table = ItemsTable(path="items.parquet", id="job", category="cat")
    items = pd.DataFrame({"job": range(1_500), "cat": "it"})
    items.to_parquet(tmp_path / "data" / "items.parquet")
    cfg = _cfg(items=table)
    with pytest.raises(DataSchemaError, match=r"'job' \(data.items.id=job\) holds integers but "
                       r"the events' ids \(data.events.item=job\) hold strings \(e.g. 0 in the "
                       r"table, 'job-\d+' in the events\); store both with the same type, and "
                       r"none of them match as text either"):  # fmt: skip
        load(cfg, tmp_path, START, END)
    # ids that differ only in type are not told to be respelled
    frame.assign(job=frame["job"].str.removeprefix("job-")).to_parquet(
        tmp_path / "data" / "one.parquet", index=False
    )
    with pytest.raises(DataSchemaError, match=r"\(e.g. 0 in the table, '\d+' in the events\); "
                       r"store both with the same type \(CSV"):  # fmt: skip
        load(_cfg("one.parquet", items=table), tmp_path, START, END)
