"""Reading a date range of a dataset: the only module that reads data files.

Every frame leaves here with canonical column names (`user_id`, `item_id`, `ts`, `day`,
`label`, optional `click` / `position`; item and user attributes likewise), whatever the
dataset calls them, so the rest of the pipeline is dataset-agnostic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from replayml.config.schema import DataConfig
from replayml.errors import DataSchemaError, DataVersionError

log = logging.getLogger(__name__)

PARTITION_PREFIX = "date="
FORMATS = {".parquet": "parquet", ".csv": "csv"}


def _file_dataset(files: list[Path]) -> ds.Dataset:
    """A pyarrow dataset over Parquet or CSV files (one format per table)."""
    fmt = FORMATS.get(files[0].suffix)
    if fmt is None:
        raise DataSchemaError(
            f"{files[0]} is neither .parquet nor .csv; convert it or point data.events.path "
            f"at a supported file"
        )
    return ds.dataset([str(f) for f in files], format=fmt)


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


def _missing(path: Path, what: str) -> DataVersionError:
    return DataVersionError(
        f"{what} {path} does not exist; restore the data with `dvc pull` "
        f"(or `make data` for the default dataset)"
    )


def _partitions(path: Path) -> dict[date, list[Path]]:
    parts: dict[date, list[Path]] = {}
    for sub in sorted(path.iterdir()):
        if sub.is_dir() and sub.name.startswith(PARTITION_PREFIX):
            try:
                day = date.fromisoformat(sub.name.removeprefix(PARTITION_PREFIX))
            except ValueError:
                continue
            parts[day] = sorted(sub.glob("*.parquet"))
    return parts


def date_range(cfg: DataConfig, project_root: Path) -> tuple[date, date]:
    """First and last day present in the events (partition names, or the timestamp column)."""
    path = events_path(cfg, project_root)
    if not path.exists():
        raise _missing(path, "the events data (data.events.path)")
    if path.is_dir():
        days = [d for d, files in _partitions(path).items() if files]
        if not days:
            raise DataSchemaError(
                f"{path} has no `{PARTITION_PREFIX}YYYY-MM-DD/*.parquet` partitions; "
                f"point data.events.path at a partitioned folder or a single Parquet file"
            )
        return min(days), max(days)
    column = _file_dataset([path]).to_table(columns=[cfg.events.timestamp]).column(0)
    check_type("events", cfg.events.timestamp, column.type, "timestamp", "data.events.timestamp")
    ts = pd.Series(column.to_pandas())
    return ts.min().date(), ts.max().date()


def event_files(cfg: DataConfig, project_root: Path, start: date, end: date) -> list[Path]:
    """The data files a load of [start, end] reads (for hashing), in read order."""
    path = events_path(cfg, project_root)
    files: list[Path] = []
    if path.is_dir():
        parts = _partitions(path)
        day = start
        while day <= end:
            files.extend(parts.get(day, []))
            day += timedelta(days=1)
    else:
        files.append(path)
    for table in (cfg.items.path, cfg.users.path):
        if table:
            files.append(_root(cfg, project_root) / table)
    return files


_KINDS = {
    "integer": pa.types.is_integer,
    "timestamp": pa.types.is_timestamp,
    "number": lambda t: (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    ),
    "id": lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
    "string": lambda t: (
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)
    ),
}


def check_type(table: str, column: str, found: pa.DataType, kind: str, key: str) -> None:
    """Raise `DataSchemaError` naming the column, expected kind and found type."""
    if not _KINDS[kind](found):
        raise DataSchemaError(
            f"{table} column {column!r} ({key}={column}) should be {kind}, found {found}; "
            f"fix the data or map {key} to another column"
        )


def _check_schema(
    table: str, schema: pa.Schema, wanted: dict[str, tuple[str | None, str]], source: Path
) -> None:
    names = set(schema.names)
    for key, (column, kind) in wanted.items():
        if column is None:
            continue
        if column not in names:
            raise DataSchemaError(
                f"{table} table {source} has no column {column!r} ({key}={column}); "
                f"found {sorted(names)}. Map {key} to an existing column in conf/data/"
            )
        check_type(table, column, schema.field(column).type, kind, key)


def _events_columns(cfg: DataConfig) -> dict[str, tuple[str | None, str]]:
    e = cfg.events
    return {
        "data.events.user": (e.user, "id"),
        "data.events.item": (e.item, "id"),
        "data.events.timestamp": (e.timestamp, "timestamp"),
        "data.events.label": (e.label, "number"),
        "data.events.click": (e.click, "number"),
        "data.events.position": (e.position, "integer"),
    }


def load(cfg: DataConfig, project_root: Path, start: date, end: date) -> Tables:
    """Load events with days in [start, end] plus the attribute tables, schema-checked."""
    files = [f for f in event_files(cfg, project_root, start, end) if f.suffix in FORMATS]
    path = events_path(cfg, project_root)
    event_list = [f for f in files if f.is_relative_to(path) or f == path]
    if not event_list:
        raise DataSchemaError(f"no event files for {start}..{end} under {path}")
    for f in event_list:
        if not f.is_file():
            raise _missing(f, "the event file")
    wanted = _events_columns(cfg)
    dataset = _file_dataset(event_list)
    _check_schema("events", dataset.schema, wanted, path)
    rename = {col: key.rsplit(".", 1)[1] for key, (col, _) in wanted.items() if col}
    canonical = {"user": "user_id", "item": "item_id", "timestamp": "ts"}
    rename = {col: canonical.get(name, name) for col, name in rename.items()}
    lo = pa.scalar(datetime.combine(start, datetime.min.time()), pa.timestamp("us"))
    hi = pa.scalar(
        datetime.combine(end + timedelta(days=1), datetime.min.time()), pa.timestamp("us")
    )
    ts = ds.field(cfg.events.timestamp)
    table = dataset.to_table(
        columns=list(rename),
        filter=(ts >= lo.cast(dataset.schema.field(cfg.events.timestamp).type))
        & (ts < hi.cast(dataset.schema.field(cfg.events.timestamp).type)),
    )
    events = table.to_pandas().rename(columns=rename)
    events["ts"] = events["ts"].astype("datetime64[us]")
    events["day"] = events["ts"].dt.floor("D")
    for col in ("label", "click"):
        if col in events:
            events[col] = events[col].astype("int8")
    log.info("loaded %d events for %s..%s from %d files", len(events), start, end, len(event_list))
    return Tables(
        events=events, items=_load_items(cfg, project_root), users=_load_users(cfg, project_root)
    )


def _load_attr(
    path: Path, table: str, wanted: dict[str, tuple[str | None, str]], names: dict[str, str]
) -> pd.DataFrame:
    if not path.is_file():
        raise _missing(path, f"the {table} table")
    schema = pq.read_schema(path)
    _check_schema(table, schema, wanted, path)
    cols = [c for c, _ in wanted.values() if c]
    frame = pq.read_table(path, columns=cols).to_pandas()
    rename = {col: names[key] for key, (col, _) in wanted.items() if col}
    return frame.rename(columns=rename)


def _load_items(cfg: DataConfig, project_root: Path) -> pd.DataFrame | None:
    it = cfg.items
    if not it.path:
        return None
    wanted = {
        "data.items.id": (it.id, "id"),
        "data.items.category": (it.category, "string"),
        "data.items.price": (it.price, "number"),
        "data.items.created": (it.created, "timestamp"),
        "data.items.region": (it.region, "string"),
    }
    names = {
        "data.items.id": "item_id",
        "data.items.category": "category",
        "data.items.price": "price",
        "data.items.created": "created",
        "data.items.region": "item_region",
    }
    items = _load_attr(_root(cfg, project_root) / it.path, "items", wanted, names)
    if "category" in items:
        items["category"] = items["category"].astype("string")
    if "item_region" in items:
        items["item_region"] = items["item_region"].astype("string")
    return items


def _load_users(cfg: DataConfig, project_root: Path) -> pd.DataFrame | None:
    us = cfg.users
    if not us.path:
        return None
    wanted = {"data.users.id": (us.id, "id"), "data.users.region": (us.region, "string")}
    names = {"data.users.id": "user_id", "data.users.region": "user_region"}
    users = _load_attr(_root(cfg, project_root) / us.path, "users", wanted, names)
    if "user_region" in users:
        users["user_region"] = users["user_region"].astype("string")
    return users
