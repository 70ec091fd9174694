"""Reading a date range of a dataset: the only module that reads data files.

Every frame leaves here with canonical column names (`user_id`, `item_id`, `ts`, `day`,
`label`, optional `click` / `position`; item and user attributes likewise), whatever the
dataset calls them, so the rest of the pipeline is dataset-agnostic.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from replayml.config.schema import DataConfig, EventsTable
from replayml.errors import ConfigError, DataSchemaError, DataVersionError

log = logging.getLogger(__name__)

PARTITION_PREFIX = "date="
FORMATS = {".parquet": "parquet", ".csv": "csv", ".csv.gz": "csv", ".csv.bz2": "csv"}


def file_format(path: Path) -> str | None:
    """'parquet' or 'csv' by the file's name (a CSV may be gzip- or bzip2-compressed)."""
    name = path.name.lower()
    return next((fmt for end, fmt in FORMATS.items() if name.endswith(end)), None)


def _file_dataset(
    files: list[Path], key: str = "data.events.path", ids: tuple[str | None, ...] = ()
) -> ds.Dataset:
    """A pyarrow dataset over Parquet or CSV files (one format per table).

    A CSV's `ids` columns are read as text: typing them by guessing from the first rows would
    turn '0007' into 7 (merging it with '7') and fail on a later id that is not a number.
    """
    fmt: str | ds.FileFormat | None = file_format(files[0])
    if fmt is None:
        raise DataSchemaError(
            f"{files[0]} is neither .parquet nor .csv (or .csv.gz); convert it or point {key} "
            f"at a supported file"
        )
    if fmt == "csv":
        text = {c: pa.string() for c in ids if c}
        options = pacsv.ConvertOptions(column_types=text, strings_can_be_null=True)
        fmt = ds.CsvFileFormat(convert_options=options)  # an empty field is a missing value
    with _read_errors(files):
        return ds.dataset([str(f) for f in files], format=fmt)


@contextmanager
def _read_errors(files: list[Path]) -> Iterator[None]:
    """Turn pyarrow's errors on reading `files` into errors that name the files and a fix."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataSchemaError(_read_problem(exc, files)) from exc


def _read_problem(exc: Exception, files: list[Path]) -> str:
    text = str(exc).strip().splitlines()[0]
    where = str(files[0]) if len(files) == 1 else f"{len(files)} files from {files[0]}"
    if file_format(files[0]) == "csv":
        if "conversion error" in text:
            return (
                f"cannot read {where}: {text}; pyarrow types a CSV column from its first rows, "
                f"so write each column in one format all the way down (e.g. the same "
                f"timestamp precision), or store the table as Parquet"
            )
        return f"cannot read {where}: {text}; check that it is a CSV file with one header row"
    broken = []
    schemas: dict[Path, pa.Schema] = {}
    for f in files:
        try:
            meta = pq.read_metadata(f)
        except (pa.ArrowInvalid, OSError) as err:
            broken.append(f"{f} ({str(err).strip().splitlines()[0]})")
            continue
        if meta.num_rows:
            schemas[f] = meta.schema.to_arrow_schema()
    if broken:
        return (
            f"cannot read {broken[0]}: not a readable Parquet file (an interrupted write?); "
            f"remove or rewrite it, then `dvc add` the data again"
        )
    first, *rest = list(schemas.items()) or [(files[0], pa.schema([]))]
    for f, schema in rest:
        for field in first[1]:
            if field.name in schema.names and schema.field(field.name).type != field.type:
                return (
                    f"the files read do not share one schema: column {field.name!r} is "
                    f"{field.type} in {first[0]} but {schema.field(field.name).type} in {f}; "
                    f"write every file with the same column types ({text})"
                )
    return f"cannot read {where}: {text}"


@dataclass(frozen=True)
class Tables:
    """The loaded slice of a dataset, with canonical column names."""

    events: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None


def _root(cfg: DataConfig, project_root: Path) -> Path:
    return (project_root / cfg.root).resolve()


def events_path(cfg: DataConfig, project_root: Path) -> Path:
    """Absolute path of the events folder or file."""
    return _root(cfg, project_root) / cfg.events.path


_GLOB_CHARS = frozenset("*?[")


def _missing(
    path: Path,
    what: str,
    key: str | None = None,
    value: str | None = None,
    dvc_file: str = "data.dvc",
) -> DataVersionError | ConfigError:
    """The error for a data path that does not exist: a pattern in `key` is named as such.
    `dvc_file` (data.dvc_file) is what to pull: a bare `dvc pull` also wants every pipeline
    output, and fails in a clone that never ran `dvc repro`."""
    if key and value and _GLOB_CHARS & set(value):
        parts = PurePosixPath(value).parts
        plain = PurePosixPath(
            *parts[: next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))]
        )
        what_fits = (
            "one file (Parquet or CSV) or a folder of `date=YYYY-MM-DD/*.parquet` partitions"
            if key == "data.events.path"
            else "one file (Parquet or CSV)"
        )
        example = f" (e.g. {key}={plain})" if plain.parts and key == "data.events.path" else ""
        return ConfigError(
            f"{key}={value} is a pattern, but data paths are a file or a folder, not a "
            f"pattern; point {key} at {what_fits}{example}"
        )
    return DataVersionError(
        f"{what} {path} does not exist; restore the data with `dvc pull {dvc_file}` "
        f"(or `make data` for the default dataset)"
    )


def _partition_day(name: str) -> date | None:
    """The day of a `date=...` folder: `date=2024-05-01`, or the midnight pandas writes for a
    datetime partition column (`date=2024-05-01%2000%3A00%3A00.000000`)."""
    if not name.startswith(PARTITION_PREFIX):
        return None
    value = unquote(name.removeprefix(PARTITION_PREFIX))
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.date() if moment.time() == datetime.min.time() else None


def _partitions(path: Path) -> dict[date, list[Path]]:
    """The data files of each `date=` folder of `path`: one level of Parquet files per day.

    A folder without any, or with sub-folders (whose files would not be read), is an error.
    """
    parts: dict[date, list[Path]] = {}
    wrong: list[Path] = []
    strays: list[str] = []  # what no window would read: the data's days would silently move
    for sub in sorted(path.iterdir()):
        day = _partition_day(sub.name) if sub.is_dir() else None
        if day is None:
            if _data_file(sub.name):
                strays.append(sub.name + ("/" if sub.is_dir() else ""))
            continue
        files, nested = [], False
        with os.scandir(sub) as entries:
            for entry in entries:
                if not _data_file(entry.name):
                    continue
                if entry.is_dir():
                    nested = True
                elif entry.name.endswith(".parquet"):
                    files.append(Path(entry.path))
                else:
                    strays.append(f"{sub.name}/{entry.name}")
        parts[day] = sorted(files)
        if nested or not files:
            wrong.append(sub)
    if wrong:
        raise _not_one_level(path, wrong)
    if strays and parts:
        raise _strays(path, sorted(strays))
    return parts


def _strays(path: Path, strays: list[str]) -> DataSchemaError:
    """The error for entries of a partitioned folder that no load would read."""
    shown = ", ".join(strays[:4]) + (f" and {len(strays) - 4} more" if strays[4:] else "")
    return DataSchemaError(
        f"{len(strays)} entr{'y' if len(strays) == 1 else 'ies'} of {path} would not be read: "
        f"{shown}. Only `{PARTITION_PREFIX}YYYY-MM-DD/*.parquet` is data (a day's folder "
        f"named otherwise, e.g. `dt=` or `date=2024-5-5`, would be left out and the data's "
        f"days would move): rename each day's folder to {PARTITION_PREFIX}YYYY-MM-DD and its "
        f"files to *.parquet, move what is not data out of the folder (or name it with a "
        f"leading `_` or `.`), then `dvc add` the data again"
    )


def _not_one_level(path: Path, folders: list[Path]) -> DataSchemaError:
    """The error for `date=` folders that are not one level of Parquet files (a day dropped
    or read in part would shift the windows, or silently lose rows)."""
    kinds = set()
    described = []
    for i, folder in enumerate(folders):
        found = sorted(
            (p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()),
            key=lambda name: (not name.endswith("/"), name),  # sub-folders first
        )
        kinds.add(
            "nested" if any(n.endswith("/") for n in found) else "files" if found else "empty"
        )
        if i < 3:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if found[3:] else "")
            described.append(f"{folder.name} ({'holds ' + shown if found else 'empty'})")
    more = f" and {len(folders) - 3} more" if folders[3:] else ""
    fixes = []
    if "nested" in kinds:
        fixes.append(
            "write one level of files per day, `date=YYYY-MM-DD/*.parquet` (e.g. pandas "
            "`to_parquet(path, partition_cols=['date'])` with the day only: partitioning by "
            "hour too nests a folder per hour), then `dvc add` the data again"
        )
    if "files" in kinds:
        fixes.append(
            "store a day's events as `*.parquet` files (names starting with `.` or `_` are "
            "not data), then `dvc add` the data again"
        )
    if "empty" in kinds:
        fixes.append(
            "remove an empty folder (a day without events needs none), or restore its files "
            "(`dvc checkout`)"
        )
    return DataSchemaError(
        f"{len(folders)} partition folder(s) of {path} do not hold their day's events as "
        f"Parquet files directly: "
        f"{', '.join(described)}{more}; {'; '.join(fixes)}"
    )


#: time zones that are UTC under another name
_UTC_NAMES = frozenset({"utc", "etc/utc", "z", "+00:00", "-00:00", "gmt", "etc/gmt", "uct",
                        "etc/uct", "zulu", "etc/zulu", "universal", "etc/universal"})  # fmt: skip


@dataclass(frozen=True)
class _FileDays:
    """What a partition's file holds in the events' time column."""

    zoned: bool  # zone-aware times in a zone other than UTC
    days: tuple[date, date] | None  # the days of its earliest and latest time, as loaded

    def off(self, day: date) -> bool:
        """Whether the file, in the partition of `day`, may hold times of other days."""
        return self.zoned or (self.days is not None and self.days != (day, day))


def _file_days(path: Path, events: EventsTable) -> _FileDays:
    """The days a Parquet file's times fall on, as the load reads them (UTC days for
    zone-aware times, epoch times in their unit), from its footer's statistics.

    A footer is cheap to read (about 0.05 ms a file); a file written without statistics has its
    time column read instead. `days` is None for a file without times, or with times the load
    refuses (an unreadable file, a wrong epoch unit: the load names them).
    """
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError):
        return _FileDays(False, None)
    schema = meta.schema.to_arrow_schema()
    if events.timestamp not in schema.names:
        return _FileDays(False, None)
    found = _value_type(schema.field(events.timestamp).type)
    zoned = _local_zone(found)
    if not meta.num_rows:  # an empty file's columns may have any type
        return _FileDays(zoned, None)
    bounds = _stats_bounds(meta, events.timestamp)
    try:
        if bounds is None:
            values = _read_column(path, events.timestamp)
        else:
            values = pa.chunked_array([pa.array(bounds, type=found)])
        days = pc.min_max(as_naive_timestamps(values, events).cast(pa.date32()))
        first, last = days["min"].as_py(), days["max"].as_py()
    except (DataSchemaError, pa.ArrowException, OSError, OverflowError, ValueError, TypeError):
        return _FileDays(zoned, None)
    if first is None or last is None:
        return _FileDays(zoned, None)
    low, high = PLAUSIBLE_YEARS
    if _is_epoch(found) and not low <= first.year <= last.year < high:
        return _FileDays(zoned, None)  # a wrong unit or placeholder times: refused on load
    return _FileDays(zoned, (first, last))


def _leaf_index(meta: pq.FileMetaData, column: str) -> int | None:
    """The Parquet column (leaf) index of a top-level column; nested columns before it hold
    several leaves each, so its position among the Arrow fields may be another column's."""
    return next((i for i in range(meta.num_columns) if meta.schema.column(i).path == column), None)


def _stats_bounds(meta: pq.FileMetaData, column: str) -> tuple[object, object] | None:
    """A column's smallest and largest value from a Parquet file's statistics; None when a row
    group holding values has none (or the column holds no values)."""
    index = _leaf_index(meta, column)
    if index is None:
        return None
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        stats = group.column(index).statistics
        if stats is not None and stats.has_min_max:
            lows.append(stats.min)
            highs.append(stats.max)
        elif group.num_rows and not (
            stats is not None and stats.has_null_count and stats.null_count == group.num_rows
        ):
            return None
    return (min(lows), max(highs)) if lows else None


def _local_zone(t: pa.DataType) -> bool:
    """Whether `t` is a zone-aware timestamp in a zone other than UTC."""
    t = _value_type(t)
    return bool(pa.types.is_timestamp(t) and t.tz and t.tz.lower() not in _UTC_NAMES)


def _spills(parts: dict[date, list[Path]], events: EventsTable, first: date, last: date) -> bool:
    """Whether a partition of the days [first, last] holds times of other days, or times in a
    zone other than UTC (every file tells, not the first one's: an export that changed zone
    mid-history leaves UTC files and local ones side by side)."""
    return any(
        _file_days(f, events).off(day)
        for day, files in parts.items()
        if first <= day <= last
        for f in files
    )


def _read_span(
    parts: dict[date, list[Path]], events: EventsTable, start: date, end: date
) -> tuple[date, date]:
    """The partition days a load of the days [start, end] reads: one more on each side when
    those days' partitions spill into the days next to them (partitions by local date of UTC
    or epoch times: a few hours of a UTC day sit in the next day's folder); the window's filter
    keeps the rows of [start, end]."""
    wider = start - timedelta(days=1), end + timedelta(days=1)
    if _spills(parts, events, *wider):
        return wider
    return start, end


def _unread_rows(
    parts: dict[date, list[Path]], events: EventsTable, start: date, end: date
) -> tuple[int, list[str]]:
    """The events of the days [start, end] in partitions a load of those days does not read
    (more than a day from their times), and those partitions' folders.

    Only files whose footers say they may hold such times have their time column read.
    """
    first, last = _read_span(parts, events, start, end)
    count, folders = 0, []
    for day, files in parts.items():
        if first <= day <= last:
            continue
        for f in files:
            days = _file_days(f, events).days
            if days is None or days[1] < start or days[0] > end:
                continue
            times = as_naive_timestamps(_read_column(f, events.timestamp), events)
            times = times.cast(pa.date32())
            inside = pc.and_(pc.greater_equal(times, start), pc.less_equal(times, end))
            n = int(pc.sum(inside).as_py() or 0)
            if n:
                count += n
                folders.append(f.parent.name)
    return count, sorted(set(folders))


def _data_file(name: str) -> bool:
    """Files named `.x` or `_x` are not data (macOS `._part-0.parquet`, Spark's markers), as
    in pyarrow's own dataset discovery."""
    return not name.startswith((".", "_"))


def date_range(cfg: DataConfig, project_root: Path) -> tuple[date, date]:
    """First and last day present in the events: the partition names, or the days of the times
    when partitions hold times of other days (or zone-aware local ones); a file's timestamp
    column."""
    path = events_path(cfg, project_root)
    if not path.exists():
        raise _missing(path, "the events data (data.events.path)", "data.events.path",
                       cfg.events.path, cfg.dvc_file)  # fmt: skip
    if path.is_dir():
        parts = _partitions(path)
        days = list(parts)
        if not days:
            found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
            shown = ", ".join(found[:4]) + (f" (and {len(found) - 4} more)" if found[4:] else "")
            raise DataSchemaError(
                f"{path} has no `{PARTITION_PREFIX}YYYY-MM-DD/*.parquet` partitions (found: "
                f"{shown or 'nothing'}); write one folder per day named so (e.g. pandas "
                f"`to_parquet(partition_cols=['date'])` with the day as text), or point "
                f"data.events.path at a single Parquet or CSV file"
            )
        found = {day: [_file_days(f, cfg.events) for f in files] for day, files in parts.items()}
        if any(d.off(day) for day, in_part in found.items() for d in in_part):
            known = [d.days for in_part in found.values() for d in in_part if d.days is not None]
            if known:  # the days of the times, not the folder names
                return min(k[0] for k in known), max(k[1] for k in known)
        return min(days), max(days)
    dataset = _file_dataset([path])
    _check_schema("events", dataset.schema, {"data.events.timestamp": (cfg.events.timestamp,
                                                                      "any")}, path)  # fmt: skip
    with _read_errors([path]):
        column = dataset.to_table(columns=[cfg.events.timestamp]).column(0)
    if _is_epoch(column.type):
        low, high = pc.min(column).as_py(), pc.max(column).as_py()
        _check_epoch_unit(low, high, cfg.events, lambda: column)
    column = as_naive_timestamps(column, cfg.events)
    ts = pd.Series(column.to_pandas())
    return ts.min().date(), ts.max().date()


#: the years epoch times of event data plausibly fall in; outside them the unit is wrong
PLAUSIBLE_YEARS = (1990, 2100)


def _outside(values: pa.ChunkedArray, unit: str) -> tuple[int, object]:
    """How many epoch times `unit` puts outside the plausible years, and one of them."""
    lo, hi = (
        (pd.Timestamp(f"{y}-01-01") - pd.Timestamp(0)) // pd.Timedelta(1, unit)
        for y in PLAUSIBLE_YEARS
    )
    inside = pc.and_(pc.greater_equal(values, lo), pc.less(values, hi))
    out = pc.filter(values, pc.invert(inside))
    return len(out), (out[0].as_py() if len(out) else None)


def _check_epoch_unit(
    low: float | None,
    high: float | None,
    events: EventsTable,
    values: Callable[[], pa.ChunkedArray] | None = None,
) -> None:
    """Refuse integer times that the configured unit puts outside plausible years.

    `values` reads the column, to tell a few placeholder times (e.g. 0 for unknown) from a
    wrong unit; it is called only when `low` or `high` is implausible.
    """
    unit = events.timestamp_unit
    if low is None or high is None or unit is None:
        return
    lo, hi = (pd.Timestamp(f"{y}-01-01") for y in PLAUSIBLE_YEARS)

    def plausible(u: str) -> bool:
        try:
            first, last = pd.to_datetime([low, high], unit=u)
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
            return False
        return bool(lo <= first and last < hi)

    if plausible(unit.value):
        return
    years = f"{PLAUSIBLE_YEARS[0]}..{PLAUSIBLE_YEARS[1]}"
    col = events.timestamp
    fits = [u for u in ("s", "ms", "us", "ns") if plausible(u)]
    column = values() if values is not None and not fits else None
    if column is not None and len(column) - column.null_count:
        total = len(column) - column.null_count
        for u in (unit.value, *(u for u in ("s", "ms", "us", "ns") if u != unit.value)):
            n_out, example = _outside(column, u)
            if n_out * 2 >= total:
                continue  # most times do not fit this unit
            rows = (
                f"{n_out} of {total} rows give times outside {years} (e.g. {example})"
                if u == unit.value
                else f"most times fit data.events.timestamp_unit={u}: set it; even then "
                f"{n_out} of {total} rows give times outside {years} (e.g. {example})"
            )
            raise DataSchemaError(
                f"events column {col!r} (data.events.timestamp={col}) read with "
                f"data.events.timestamp_unit={unit.value}: {rows}, placeholders for unknown "
                f"times? Drop or fill those rows in the data (rows are never dropped "
                f"silently), then `dvc add` it again"
            )
    fix = (
        f"set data.events.timestamp_unit={fits[0]}"
        if fits
        else "check data.events.timestamp and data.events.timestamp_unit"
    )
    raise DataSchemaError(
        f"events column {events.timestamp!r} read with data.events.timestamp_unit={unit.value} "
        f"gives times outside {years} (values {low}..{high}); {fix}"
    )


def _is_epoch(t: pa.DataType) -> bool:
    """Numbers that may be times since the Unix epoch (integers, or floats like `time.time()`)."""
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _timestamp_type(found: pa.DataType, events: EventsTable) -> pa.DataType:
    """The timestamp type the events' time column is read as; a clear error if it can't be."""
    col, unit = events.timestamp, events.timestamp_unit
    if pa.types.is_timestamp(found) and unit is None:
        return pa.timestamp(found.unit)
    if (pa.types.is_date32(found) or pa.types.is_date64(found)) and unit is None:
        return pa.timestamp("s")  # a day without a time: its midnight
    if _is_epoch(found) and unit is not None:
        return pa.timestamp(unit.value)
    if _is_epoch(found):
        raise DataSchemaError(
            f"events column {col!r} (data.events.timestamp={col}) holds numbers ({found}); "
            f"if they are times since the Unix epoch set data.events.timestamp_unit to their "
            f"unit (s, ms, us or ns; e.g. MovieLens: data.events.timestamp_unit=s)"
        )
    if unit is not None:
        raise DataSchemaError(
            f"data.events.timestamp_unit={unit.value} is for integer epoch times, but events "
            f"column {col!r} (data.events.timestamp={col}) is {found}; remove "
            f"data.events.timestamp_unit"
        )
    raise DataSchemaError(
        f"events column {col!r} (data.events.timestamp={col}) should be a timestamp, found "
        f"{found}; store it as a timestamp (e.g. `pd.to_datetime` before writing Parquet; a "
        f"CSV's ISO 8601 times are read as timestamps), as integer epoch times with "
        f"data.events.timestamp_unit, or map data.events.timestamp to another column"
    )


#: microseconds in one unit of epoch time
_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}


def as_naive_timestamps(column: pa.ChunkedArray, events: EventsTable) -> pa.ChunkedArray:
    """The events' time column as naive timestamps (UTC wall time for zone-aware ones)."""
    as_ts = _timestamp_type(column.type, events)
    if pa.types.is_floating(column.type) and events.timestamp_unit is not None:
        micros = pc.round(pc.multiply(column, _MICROS[events.timestamp_unit.value]))
        return micros.cast(pa.int64()).cast(pa.timestamp("us"))
    return column.cast(as_ts)


def in_window(
    cfg: DataConfig, project_root: Path, start: date, end: date
) -> Callable[[str], bool]:
    """Whether a file of the dataset (a path relative to `data.root`) is an events file of a
    partition a load of [start, end] reads: what that load must read."""
    events = PurePosixPath(cfg.events.path)
    path = events_path(cfg, project_root)
    if path.is_dir():
        start, end = _read_span(_partitions(path), cfg.events, start, end)

    def belongs(rel: str) -> bool:
        path = PurePosixPath(rel)
        if path.parent.parent != events or path.suffix != ".parquet":
            return False
        if not _data_file(path.name):
            return False
        day = _partition_day(path.parent.name)
        return day is not None and start <= day <= end

    return belongs


def event_files(cfg: DataConfig, project_root: Path, start: date, end: date) -> list[Path]:
    """The data files a load of [start, end] reads (for hashing), in read order."""
    path = events_path(cfg, project_root)
    files: list[Path] = []
    if path.is_dir():
        parts = _partitions(path)
        day, end = _read_span(parts, cfg.events, start, end)
        while day <= end:
            files.extend(parts.get(day, []))
            day += timedelta(days=1)
    else:
        files.append(path)
    for table in (cfg.items.path, cfg.users.path):
        if table:
            files.append(_root(cfg, project_root) / table)
    return files


def _is_number(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    )


_KINDS = {
    "any": lambda t: True,
    "integer": pa.types.is_integer,
    "timestamp": lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t),
    "number": _is_number,
    "0/1 or true/false": _is_number,  # the values are checked on load (`_check_values`)
    "id": lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
    # a category or region: names, or integer codes (read as their decimal text)
    "text or integer": lambda t: (
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
    ),
}


#: the kinds a text column can be converted to
_NUMBER_KINDS = ("number", "integer", "0/1 or true/false")
#: text values that usually mean a positive outcome
_YES = frozenset({"yes", "y", "true", "t", "1", "positive", "clicked", "bought", "converted"})


#: the distinct values of a text column looked at to tell numbers as text from words
_SAMPLE = 1_000


def _is_text(t: pa.DataType) -> bool:
    t = _value_type(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _text_fix(column: str, key: str, kind: str, values: pa.ChunkedArray) -> str:
    """What a text column holds where `kind` is expected, and how to convert it in the data."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    unique = [v for v in pc.unique(values).to_pylist() if v is not None]
    found = sorted(unique)
    if not found:
        return f"it holds no values: fill it or map {key} to another column"
    df = f'df["{column}"]'
    if kind == "0/1 or true/false":
        shown = ", ".join(repr(v) for v in found[:5])
        more = f" and {len(found) - 5} more" if found[5:] else ""
        yes = next((v for v in found if v.strip().lower() in _YES), None)
        which = "" if yes else " (with the value of a positive outcome)"
        return (
            f"it holds text ({shown}{more}): map it to 0/1 in the data{which}, e.g. "
            f'`{df} = ({df} == "{yes or found[-1]}").astype("int8")`, then `dvc add` it again'
        )
    seen = unique[:_SAMPLE]  # in the order they first appear
    words = [v for v in seen if v.strip() and not _is_number_text(v)]
    numbers = [v for v in seen if _is_number_text(v)]
    blank = any(not v.strip() for v in seen)  # missing values stored as ''
    # '$1,200', '12,5', '12.5 EUR' are numbers written for people; 'education' is not one
    digitless = [v for v in words if not any(c.isdigit() for c in v)]
    if not numbers and not words:
        return f"it holds only empty text (''): fill it or map {key} to another column"
    if len(digitless) > len(seen) - len(digitless) - (1 if blank else 0):
        return (
            f"it holds text that is not a number (e.g. {digitless[0]!r}): {key} probably maps "
            f"the wrong column; map {key} to a column of numbers"
        )
    words = [v for v in words if v not in digitless] + digitless  # formatted numbers first
    coerce = ', errors="coerce"' if blank else ""
    caveat = ""
    if words:
        coerce_too = "" if blank else ', or pass errors="coerce" to make such values empty'
        caveat = (
            f" ({words[0]!r} is not a number as written: remove currency signs, units and "
            f"thousands separators, and write a decimal comma as a point, first{coerce_too})"
        )
    shown = repr(words[0] if words else numbers[0])
    shown += ", and '' for missing values" if blank else ""
    becomes = " ('' becomes a missing value)" if blank else ""
    return (
        f"it holds numbers as text (e.g. {shown}): convert them in the data, e.g. "
        f"`{df} = pd.to_numeric({df}{coerce})`{becomes}{caveat}, then `dvc add` it again, or "
        f"map {key} to another column"
    )


def _value_type(t: pa.DataType) -> pa.DataType:
    """The type of a column's values: a dictionary-encoded (pandas categorical) column's too."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _decoded(table: pa.Table) -> pa.Table:
    """The table with dictionary-encoded columns (pandas categoricals) as plain values."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
        elif pa.types.is_decimal(field.type):  # e.g. prices exported from SQL as DECIMAL(10,2)
            table = table.set_column(i, field.name, table.column(i).cast(pa.float64()))
    return table


def check_type(
    table: str,
    column: str,
    found: pa.DataType,
    kind: str,
    key: str,
    values: Callable[[], pa.ChunkedArray] | None = None,
) -> None:
    """Raise `DataSchemaError` naming the column, expected kind and found type.

    `values` reads the column, to show what a text column holds where numbers are expected.
    """
    if _KINDS[kind](_value_type(found)):
        return
    if values is not None and _is_text(found) and kind in _NUMBER_KINDS:
        hint = _text_fix(column, key, kind, values())
    elif kind == "id" and pa.types.is_floating(_value_type(found)):
        hint = (
            "integer ids become floats in pandas when a column had empty values: drop "
            "those rows and store the ids as integers (`df[col].astype('int64')`), or map "
            f"{key} to another column"
        )
    else:
        hint = f"fix the data or map {key} to another column"
    raise DataSchemaError(
        f"{table} column {column!r} ({key}={column}) should be {kind}, found {found}; {hint}"
    )


def _check_schema(
    table: str,
    schema: pa.Schema,
    wanted: dict[str, tuple[str | None, str]],
    source: Path,
    read: Callable[[str], pa.ChunkedArray] | None = None,
) -> None:
    """Every mapped column exists with its kind; `read(column)` shows a wrong column's values."""
    names = set(schema.names)
    for key, (column, kind) in wanted.items():
        if column is None:
            continue
        if column not in names:
            raise DataSchemaError(
                f"{table} table {source} has no column {column!r} ({key}={column}); "
                f"found {sorted(names)}. Map {key} to an existing column in conf/data/"
            )
        values = functools.partial(read, column) if read is not None else None
        check_type(table, column, schema.field(column).type, kind, key, values)


def _events_columns(cfg: DataConfig) -> dict[str, tuple[str | None, str]]:
    e = cfg.events
    return {
        "data.events.user": (e.user, "id"),
        "data.events.item": (e.item, "id"),
        "data.events.timestamp": (e.timestamp, "any"),  # `_timestamp_type` checks it
        "data.events.label": (e.label, "0/1 or true/false"),
        "data.events.click": (e.click, "0/1 or true/false"),
        "data.events.position": (e.position, "integer"),
    }


def load(cfg: DataConfig, project_root: Path, start: date, end: date) -> Tables:
    """Load events with days in [start, end] plus the attribute tables, schema-checked."""
    files = [f for f in event_files(cfg, project_root, start, end) if file_format(f)]
    path = events_path(cfg, project_root)
    event_list = [f for f in files if f.is_relative_to(path) or f == path]
    if not event_list:
        raise DataSchemaError(f"no event files for {start}..{end} under {path}")
    for f in event_list:
        if not f.is_file():
            raise _missing(f, "the event file", dvc_file=cfg.dvc_file)
    wanted = _events_columns(cfg)
    metas: dict[Path, pq.FileMetaData] = {}
    if path.is_dir():  # empty files (e.g. from an empty frame) may have any column types
        with _read_errors(event_list):
            metas = {f: pq.read_metadata(f) for f in event_list}
        event_list = [f for f in event_list if metas[f].num_rows] or event_list[:1]
    ids = (cfg.events.user, cfg.events.item)
    dataset = _file_dataset(event_list, ids=ids)
    _check_schema("events", dataset.schema, wanted, path, _column_reader(dataset, event_list))
    canonical = {"user": "user_id", "item": "item_id", "timestamp": "ts"}
    roles = {}  # canonical name -> the dataset's column; one column may fill two roles
    for key, (col, _) in wanted.items():
        if col:
            name = key.rsplit(".", 1)[1]
            roles[canonical.get(name, name)] = col
    rename: dict[str, str] = {}
    shared: dict[str, str] = {}  # a second role of an already read column -> its first role
    for name, col in roles.items():
        if col in rename:
            shared[name] = rename[col]
        else:
            rename[col] = name
    if path.is_dir() and cfg.events.timestamp_unit is not None:
        ts = cfg.events.timestamp
        for f in event_list:  # every file: the unit may change between partitions
            try:
                low, high = _min_max(metas[f], cfg.events.timestamp)
                _check_epoch_unit(low, high, cfg.events, functools.partial(_read_column, f, ts))
            except DataSchemaError as exc:
                raise DataSchemaError(f"{f}: {exc}") from None
    with _read_errors(event_list):
        table = dataset.to_table(
            columns=list(rename), filter=_window_filter(cfg, dataset, start, end)
        )
    table = _decoded(table)
    _check_values(table, cfg.events, start, end)
    if path.is_dir():
        lost, folders = _unread_rows(_partitions(path), cfg.events, start, end)
        if lost:
            log.warning(
                "%d events of %s..%s are in partitions more than a day from their times (%s) "
                "and are not read; partition by the UTC day of data.events.timestamp=%s to "
                "keep them",
                lost,
                start,
                end,
                ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if folders[3:] else ""),
                cfg.events.timestamp,
            )
    ts_col = table.schema.get_field_index(cfg.events.timestamp)
    table = table.set_column(
        ts_col, cfg.events.timestamp, as_naive_timestamps(table.column(ts_col), cfg.events)
    )
    events = table.to_pandas().rename(columns=rename)
    for name, first in shared.items():
        events[name] = events[first]
    if getattr(events["ts"].dtype, "tz", None) is not None:  # restored from pandas metadata
        events["ts"] = events["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    events["ts"] = events["ts"].astype("datetime64[us]")
    events["day"] = events["ts"].dt.floor("D")
    for col in ("label", "click"):
        if col in events:
            events[col] = events[col].astype("int8")
    log.info("loaded %d events for %s..%s from %d files", len(events), start, end, len(event_list))
    items, users = _load_items(cfg, project_root), _load_users(cfg, project_root)
    events_csv = file_format(event_list[0]) == "csv"
    for column, table, table_path in (
        ("item_id", items, cfg.items.path),
        ("user_id", users, cfg.users.path),
    ):
        if table is not None:
            table_csv = file_format(Path(str(table_path))) == "csv"
            _align_csv_ids(events, table, column, events_csv, table_csv)
    _check_ids_match(events, "item_id", items, cfg.events.item, "data.items.id", cfg.items.id)
    _check_ids_match(events, "user_id", users, cfg.events.user, "data.users.id", cfg.users.id)
    return Tables(events=events, items=items, users=users)


def _min_max(meta: pq.FileMetaData, column: str) -> tuple[int | None, int | None]:
    """A column's smallest and largest value in a Parquet file, from its statistics."""
    index = _leaf_index(meta, column)
    if index is None:
        return None, None
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        if stats is not None and stats.has_min_max:
            lows.append(stats.min)
            highs.append(stats.max)
    return (min(lows), max(highs)) if lows else (None, None)


def _window_filter(cfg: DataConfig, dataset: ds.Dataset, start: date, end: date) -> ds.Expression:
    """Rows with a time in [start, end + 1 day), and rows without a time (to be refused)."""
    found = dataset.schema.field(cfg.events.timestamp).type
    as_ts = _timestamp_type(found, cfg.events)
    bounds = []
    for day in (start, end + timedelta(days=1)):
        naive = pa.scalar(datetime.combine(day, datetime.min.time()), pa.timestamp("us"))
        # integer epoch times compare with the bound in their unit; zone-aware times in UTC
        bound = naive.cast(as_ts).cast(pa.int64()) if _is_epoch(found) else naive
        bounds.append(bound.cast(found))
    ts = ds.field(cfg.events.timestamp)
    return ((ts >= bounds[0]) & (ts < bounds[1])) | ts.is_null()


def _check_values(table: pa.Table, events: EventsTable, start: date, end: date) -> None:
    """Refuse empty ids or times and labels that are not 0/1, naming column, key and fix."""
    where = f"in the events read for {start}..{end}"
    for key, col in (
        ("user", events.user),
        ("item", events.item),
        ("timestamp", events.timestamp),
    ):
        values = table.column(col)
        empty = values.null_count
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            blank = pc.equal(pc.utf8_trim_whitespace(values), "")  # an id of only spaces
            empty += int(pc.sum(blank).as_py() or 0)
        if empty:
            raise DataSchemaError(
                f"events column {col!r} (data.events.{key}={col}) has {empty} empty values "
                f"{where}; drop or fill those rows in the data (rows are never dropped "
                f"silently), then `dvc add` it again"
            )
    for key, col in (("label", events.label), ("click", events.click)):
        if col is None:
            continue
        values = table.column(col)
        if values.null_count:
            raise DataSchemaError(
                f"events column {col!r} (data.events.{key}={col}) has {values.null_count} "
                f"empty values {where}; every event needs a 0/1 outcome: fill or drop them"
            )
        if pa.types.is_boolean(values.type):
            continue
        as_float = values.cast(pa.float64())
        binary = pc.is_in(as_float, value_set=pa.array([0.0, 1.0]))
        if not pc.all(binary, min_count=0).as_py():
            found = pc.unique(as_float).sort()
            shown = ", ".join(f"{v:g}" for v in found.to_pylist()[:8])
            more = f" (and {len(found) - 8} more)" if len(found) > 8 else ""
            raise DataSchemaError(
                f"events column {col!r} (data.events.{key}={col}) must hold 0/1 (or "
                f"true/false), found {shown}{more}; map data.events.{key} to a binary outcome "
                f"column (e.g. add `liked = rating >= 4` to the data)"
            )


def _id_kind(series: pd.Series) -> str:
    return "integers" if pd.api.types.is_integer_dtype(series) else "strings"


def _align_csv_ids(
    events: pd.DataFrame, table: pd.DataFrame, column: str, events_csv: bool, table_csv: bool
) -> None:
    """Integer ids matched against a CSV's ids (read as text) are matched as their text."""
    kinds = _id_kind(events[column]), _id_kind(table[column])
    if kinds == ("strings", "integers") and events_csv and len(events):
        table[column] = table[column].astype(str)
    elif kinds == ("integers", "strings") and table_csv:
        events[column] = events[column].astype(str)


def _check_ids_match(
    events: pd.DataFrame,
    column: str,
    table: pd.DataFrame | None,
    events_col: str,
    key: str,
    table_col: str,
) -> None:
    """An attribute table's ids have the events' id type, one row per id, none empty."""
    if table is None:
        return
    ids = table[column]
    name = key.split(".")[1]
    problem = None
    if ids.isna().any():
        problem = f"has {int(ids.isna().sum())} empty ids; drop those rows"
    elif ids.duplicated().any():
        dup = ids[ids.duplicated()]
        problem = (
            f"has {dup.nunique()} ids on more than one row (e.g. {dup.tolist()[0]!r}); keep one "
            f"row per id"
        )
    elif len(events) and _id_kind(ids) != _id_kind(events[column]):
        ours, theirs = ids.iloc[:1].tolist()[0], events[column].iloc[:1].tolist()[0]
        as_text = set(map(str, ids.unique())) & set(map(str, events[column].unique()))
        spelled = (
            ""
            if as_text
            else f", and none of them match as text either: map {key} to the column holding "
            f"the same ids, or normalise them (prefixes, padding) in the data"
        )
        problem = (
            f"holds {_id_kind(ids)} but the events' ids (data.events.{name.rstrip('s')}="
            f"{events_col}) hold {_id_kind(events[column])} (e.g. {ours!r} in the table, "
            f"{theirs!r} in the events); store both with the same type{spelled} (CSV columns "
            f"are typed by guessing: Parquet keeps ids like '00123' as text)"
        )
    if problem:
        raise DataSchemaError(f"{name} column {table_col!r} ({key}={table_col}) {problem}")
    _check_overlap(events[column], ids, f"{name} column {table_col!r} ({key}={table_col})",
                   f"data.events.{name.rstrip('s')}={events_col}")  # fmt: skip


#: below this share of the events' ids found in an attribute table, a load warns
LOW_ID_MATCH = 0.5


def _check_overlap(event_ids: pd.Series, table_ids: pd.Series, table: str, events: str) -> None:
    """Refuse an attribute table that matches none of the events' ids; warn when few match."""
    used = pd.Series(event_ids.unique())
    if used.empty:
        return
    found = used.isin(table_ids)
    share = float(found.mean())
    if share >= LOW_ID_MATCH:
        return
    in_table = f"{table_ids.iloc[0]!r} in the table" if len(table_ids) else "the table is empty"
    example = f"e.g. {used[~found].iloc[0]!r} in the events, {in_table}"
    if share == 0:
        raise DataSchemaError(
            f"{table} matches none of the {len(used)} ids in the events ({events}; {example}); "
            f"map the key to the column holding the same ids, or normalise them (case, "
            f"spaces, prefixes) in the data"
        )
    log.warning(
        "%s holds only %.0f%% of the %d ids in the events (%s; %s); the others get unknown "
        "attributes",
        table,
        100 * share,
        len(used),
        events,
        example,
    )


def _read_column(path: Path, column: str) -> pa.ChunkedArray:
    """One column of a Parquet file."""
    with _read_errors([path]):
        return pq.read_table(path, columns=[column]).column(0)


def _column_reader(dataset: ds.Dataset, files: list[Path]) -> Callable[[str], pa.ChunkedArray]:
    """Read one column of `dataset` (for an error message that shows its values)."""

    def read(column: str) -> pa.ChunkedArray:
        with _read_errors(files):
            return dataset.to_table(columns=[column]).column(0)

    return read


def _load_attr(
    path: Path,
    table: str,
    wanted: dict[str, tuple[str | None, str]],
    names: dict[str, str],
    value: str,
    dvc_file: str,
) -> pd.DataFrame:
    if not path.is_file():
        raise _missing(path, f"the {table} table", f"data.{table}.path", value, dvc_file)
    cols = list(dict.fromkeys(c for c, _ in wanted.values() if c))
    if file_format(path) == "parquet":
        with _read_errors([path]):
            read = functools.partial(_read_column, path)
            _check_schema(table, pq.read_schema(path), wanted, path, read)
            frame = _decoded(pq.read_table(path, columns=cols)).to_pandas()
    else:
        key = f"data.{table}.id"
        dataset = _file_dataset([path], f"data.{table}.path", ids=(wanted[key][0],))
        _check_schema(table, dataset.schema, wanted, path, _column_reader(dataset, [path]))
        with _read_errors([path]):
            frame = _decoded(dataset.to_table(columns=cols)).to_pandas()
    out = pd.DataFrame(index=frame.index)
    for key, (col, _) in wanted.items():  # one column may fill two roles
        if col:
            out[names[key]] = frame[col]
    return out


def _load_items(cfg: DataConfig, project_root: Path) -> pd.DataFrame | None:
    it = cfg.items
    if not it.path:
        return None
    wanted = {
        "data.items.id": (it.id, "id"),
        "data.items.category": (it.category, "text or integer"),
        "data.items.price": (it.price, "number"),
        "data.items.created": (it.created, "timestamp"),
        "data.items.region": (it.region, "text or integer"),
    }
    names = {
        "data.items.id": "item_id",
        "data.items.category": "category",
        "data.items.price": "price",
        "data.items.created": "created",
        "data.items.region": "item_region",
    }
    items = _load_attr(
        _root(cfg, project_root) / it.path, "items", wanted, names, it.path, cfg.dvc_file
    )
    if "created" in items and getattr(items["created"].dtype, "tz", None) is not None:
        items["created"] = items["created"].dt.tz_convert("UTC").dt.tz_localize(None)
    elif "created" in items and items["created"].dtype == object:  # days: their midnight
        items["created"] = pd.to_datetime(items["created"])
    if "category" in items:
        items["category"] = items["category"].astype("string")
    if "item_region" in items:
        items["item_region"] = items["item_region"].astype("string")
    return items


def _load_users(cfg: DataConfig, project_root: Path) -> pd.DataFrame | None:
    us = cfg.users
    if not us.path:
        return None
    wanted = {"data.users.id": (us.id, "id"), "data.users.region": (us.region, "text or integer")}
    names = {"data.users.id": "user_id", "data.users.region": "user_region"}
    users = _load_attr(
        _root(cfg, project_root) / us.path, "users", wanted, names, us.path, cfg.dvc_file
    )
    if "user_region" in users:
        users["user_region"] = users["user_region"].astype("string")
    return users
