"""`run_experiment`: one reproducible training run, from typed config to a logged MLflow run.

Everything that can be wrong with the config or the data is checked before the MLflow run is
created; once it exists, the run ends FINISHED only if every step, the model upload included,
succeeded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from replayml.config.resolve import (
    DateWindows,
    Window,
    config_to_container,
    resolve_dates,
    with_absolute_dates,
)
from replayml.config.schema import DataConfig, DatesMode, ModelKind, RunConfig
from replayml.errors import ConfigError, ReplaymlError
from replayml.lineage.code import (
    CodeVersion,
    code_version,
    python_files,
    unrecorded_modules,
    untracked_bulk,
)
from replayml.lineage.data import DataVersion, check_present, verify_files
from replayml.lineage.environment import Environment, command_line, current_environment
from replayml.lineage.sharing import commit_on_remote
from replayml.matrices import builder_code_hash
from replayml.progress import Steps
from replayml.redact import (
    FINGERPRINT_TAG,
    PLACEHOLDER,
    fingerprint,
    redact_override,
    redact_tree,
)

log = logging.getLogger(__name__)

#: the fewest rows a train, validation or test window may have; fewer than MIN_CLASS rows of
#: one label is said as a warning
MIN_WINDOW_ROWS = 100
MIN_CLASS = 10

TAG = "replayml."
_PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class RunContext:
    """Where and how a run was launched (filled in by the entrypoint)."""

    project_root: Path
    output_dir: Path
    overrides: tuple[str, ...] = ()
    choices: dict[str, str] = field(default_factory=dict)
    env_keys: frozenset[str] = frozenset()
    parent_run_id: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Matrices:
    """Feature matrices of the three windows plus the baseline scores of the test window."""

    train: Any
    valid: Any
    test: Any
    test_frame: pd.DataFrame
    test_popularity: np.ndarray
    feature_names: list[str]
    slice_hashes: dict[str, str]
    rows: dict[str, int]
    preprocess: dict[str, int]
    #: which events the validation window holds (`rows_hash`): a sweep selecting on validation
    #: metrics compares only children scored on the same rows ("" from an older cache)
    valid_rows_hash: str = ""


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced, as recorded in MLflow."""

    run_id: str
    url: str
    metrics: dict[str, float]
    tree_hash: str
    prediction_hash: str
    slice_hashes: dict[str, str]
    data_hash: str
    output_dir: Path
    replayable: bool
    config: dict[str, Any]


def rows_hash(frame: pd.DataFrame) -> str:
    """Which events a split holds (user, item, time, label in row order), whatever their
    features: two runs scored on the same test rows have the same one."""
    canonical = pd.DataFrame(
        {
            "user": frame["user_id"].astype(str),
            "item": frame["item_id"].astype(str),
            "ts": frame["ts"].astype("datetime64[ns]").astype("int64"),
            "label": frame["label"].astype("int64"),
        }
    )
    values = pd.util.hash_pandas_object(canonical, index=False).to_numpy()
    return hashlib.sha256(values.tobytes()).hexdigest()


def frame_hash(frame: pd.DataFrame, y: np.ndarray | None = None) -> str:
    """Content hash of a matrix: values in row order, column names and dtypes."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    if y is not None:
        digest.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return digest.hexdigest()


def _mapped_columns(cfg: DataConfig) -> tuple[set[str], set[str] | None, set[str] | None]:
    events = {"user_id", "item_id", "ts", "label"}
    events |= {n for n, c in (("click", cfg.events.click), ("position", cfg.events.position)) if c}
    items = None
    if cfg.items.path:
        items = {"item_id"} | {
            n
            for n, c in (
                ("category", cfg.items.category),
                ("price", cfg.items.price),
                ("created", cfg.items.created),
                ("item_region", cfg.items.region),
            )
            if c
        }
    users = None
    if cfg.users.path:
        users = {"user_id"} | ({"user_region"} if cfg.users.region else set())
    return events, items, users


def _day(d: date) -> pd.Timestamp:
    return pd.Timestamp(d)


#: LightGBM's ranges for the model keys: (lowest, highest, whether the lowest is allowed)
MODEL_RANGES: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (0.0, float("inf"), False),
    "num_leaves": (2, 131_072, True),
    "min_data_in_leaf": (0, float("inf"), True),
    "feature_fraction": (0.0, 1.0, False),
    "bagging_fraction": (0.0, 1.0, False),
    "bagging_freq": (0, float("inf"), True),
    "lambda_l2": (0.0, float("inf"), True),
    "max_bin": (2, float("inf"), True),
    "num_boost_round": (1, float("inf"), True),
    "early_stopping_rounds": (0, float("inf"), True),
    "num_threads": (1, float("inf"), True),
    "eval_at": (1, float("inf"), True),
}


def check_model(model: Any) -> None:
    """Refuse model values LightGBM would reject after the run started, naming key and range."""
    for key, (low, high, low_ok) in MODEL_RANGES.items():
        value = getattr(model, key)
        if (value >= low if low_ok else value > low) and value <= high:
            continue
        lower = f"{low} <=" if low_ok else f"{low} <"
        upper = "" if high == float("inf") else f" <= {high:g}"
        default = getattr(type(model)(), key) if key != "num_threads" else 1
        raise ConfigError(
            f"model.{key}={value} is out of range: it must be {lower} {key}{upper} (e.g. "
            f"model.{key}={default})"
        )
    if model.bagging_fraction < 1.0 and model.bagging_freq == 0:
        # LightGBM silently skips bagging then: the run would record a setting with no effect
        raise ConfigError(
            f"model.bagging_fraction={model.bagging_fraction} has no effect with "
            f"model.bagging_freq=0 (LightGBM bags only every bagging_freq iterations): add "
            f"model.bagging_freq=1, or leave model.bagging_fraction=1.0"
        )


def check_config(cfg: RunConfig, root: Path) -> tuple[date, date]:
    """The checks that need only the config and the data's date range; returns that range.

    Raises `ConfigError` / `DataSchemaError` naming the key, the value and the fix.
    """
    from replayml.data.load import date_range
    from replayml.features.build import check_builders

    events_cols, item_cols, user_cols = _mapped_columns(cfg.data)
    check_builders(cfg.features, events_cols, item_cols, user_cols)
    check_model(cfg.model)
    if cfg.preprocessing.bot_window_days < 1:
        raise ConfigError(
            f"preprocessing.bot_window_days={cfg.preprocessing.bot_window_days} must be at "
            f"least 1 (e.g. preprocessing.bot_window_days=28)"
        )
    bots = cfg.preprocessing.bot_max_events_per_day
    if bots is not None and bots < 1:
        raise ConfigError(
            f"preprocessing.bot_max_events_per_day={bots} must be at least 1 (a user with more "
            f"events on a day is dropped as a bot), or null to keep every user"
        )
    if cfg.preprocessing.min_item_support < 0:
        raise ConfigError(
            f"preprocessing.min_item_support={cfg.preprocessing.min_item_support} must be 0 "
            f"(keep every item) or more"
        )
    if not 0.0 < cfg.preprocessing.negative_rate <= 1.0:
        raise ConfigError(
            f"preprocessing.negative_rate={cfg.preprocessing.negative_rate} must be in (0, 1]"
        )
    rate = cfg.preprocessing.negative_rate
    if rate < 1.0 and cfg.model.kind is ModelKind.lgbm:
        log.warning(
            "preprocessing.negative_rate=%s keeps that share of the training window's "
            "negatives: the classifier's probabilities come out about %.3gx too high on the "
            "validation and test windows (which keep every row), so its log loss (and any "
            "threshold on its scores) does not compare with runs at another rate; AUC, AP and "
            "NDCG rank and are unaffected",
            rate, 1 / rate,
        )  # fmt: skip
    _check_inside_root(cfg.data, root)
    if (
        cfg.model.kind is ModelKind.lgbm_ranker
        and cfg.model.click_grade
        and not cfg.data.events.click
    ):
        raise ConfigError(
            f"model.click_grade={cfg.model.click_grade} grades clicks, but the data maps no "
            f"click column (data.events.click is null): the ranker would train on the contact "
            f"label alone, as with model.click_grade=0; map data.events.click, or drop "
            f"model.click_grade"
        )
    # the data's first and last day come from the workspace: it must hold the whole version
    check_present(root, cfg.data.dvc_file, cfg.data.root, cfg.data.events.path)
    first, last = date_range(cfg.data, root)
    resolve_dates(cfg.dates, first, last)
    return first, last


def _check_inside_root(data: DataConfig, root: Path) -> None:
    """Every table's path lies inside `data.root`, the folder whose version is recorded (a
    file outside it would be read without any record of its version)."""
    folder = (root / data.root).resolve()
    for key, table in (("events", data.events), ("items", data.items), ("users", data.users)):
        given = getattr(table, "path", None)
        if not given:
            continue
        # `..` and absolute paths leave the folder; symlinks (a DVC cache's links) do not
        where = Path(os.path.normpath(folder / str(given)))
        if not where.is_relative_to(folder):
            raise ConfigError(
                f"data.{key}.path={given} lies outside data.root={data.root} ({where}): only "
                f"files inside data.root are versioned by "
                f"{data.dvc_file or 'its .dvc file'} and recorded with the run; move the file "
                f"into {data.root}/ (then `dvc add {data.root}`), or point data.root at a "
                f"folder that holds every table"
            )


def history_start(cfg: RunConfig, windows: DateWindows, first: date) -> date:
    """The first day a run reads: the feature lookback and the bot window before training."""
    earliest = windows.train.start - timedelta(days=max(cfg.features.lookback_days))
    if cfg.preprocessing.bot_max_events_per_day is not None:  # the days bots are judged on
        bot_days = timedelta(days=cfg.preprocessing.bot_window_days - 1)
        earliest = min(earliest, windows.train.end - bot_days)
    return max(first, earliest)


def verify_data(cfg: RunConfig, root: Path, windows: DateWindows, start: date) -> DataVersion:
    """Check that every file a run of `cfg` reads from `start` on is byte-identical to
    the recorded version (`DataVersionError` otherwise)."""
    from replayml.data.load import event_files, in_window

    files = event_files(cfg.data, root, start, windows.test.end)
    belongs = in_window(cfg.data, root, start, windows.test.end)
    return verify_files(root, cfg.data.dvc_file, cfg.data.root, files, belongs)


def prepare(
    cfg: RunConfig, root: Path, steps: Steps, data_range: tuple[date, date] | None = None
) -> tuple[RunConfig, DateWindows, DataVersion, Matrices]:
    """Validate dates and data, load the slice, preprocess and build the three matrices.

    `data_range` is what `check_config` returned for this config, if it ran already.
    Raises `ConfigError` / `DataVersionError` / `DataSchemaError` before anything is written.
    """
    from replayml.data.load import load
    from replayml.data.preprocess import preprocess, sample_negatives
    from replayml.features.build import build_matrix
    from replayml.features.builders import item_history
    from replayml.features.registry import FeatureContext
    from replayml.model.evaluate import group_ids
    from replayml.model.fit import Split

    first, last = data_range or check_config(cfg, root)
    windows = resolve_dates(cfg.dates, first, last)
    resolved = with_absolute_dates(cfg, windows)
    earliest = windows.train.start - timedelta(days=max(cfg.features.lookback_days))
    if earliest < first:
        log.warning(
            "features.lookback_days=%s look back to %s for the first training day, before the "
            "data's first day %s: the first %d training days see less history than later "
            "ones (shorter lookbacks, or a later dates.train_start / shorter dates.train_days, "
            "give every day its full history)",
            list(cfg.features.lookback_days),
            earliest.isoformat(),
            first.isoformat(),
            min((first - earliest).days, windows.train.days),
        )
    start = history_start(cfg, windows, first)
    with steps.step("verifying data version"):
        version = verify_data(cfg, root, windows, start)
    key = None
    if version.tracked:  # untracked data has no version that could tell a change
        key = (
            str(root.resolve()),
            version.dvc_hash,
            version.files_read,
            sections_hash(config_to_container(resolved), MATRIX_SECTIONS),
        )
        reused = _reusable(key)
        if reused is not None:
            log.info(
                "reusing the feature matrices of an earlier job in this process (same data "
                "version, dates, preprocessing and features; content hashes re-checked)"
            )
            return resolved, windows, version, reused
    # let a kept set go before building another: a sweep over dates would hold two at its peak
    _prepared.clear()
    with steps.step("loading data"):
        tables = load(cfg.data, root, start, windows.test.end)
    events, stats = preprocess(
        tables.events, cfg.preprocessing, _day(windows.train.start), _day(windows.train.end)
    )
    splits: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    rows: dict[str, int] = {}
    max_w = max(cfg.features.lookback_days)
    with steps.step("building features"):
        parts: list[pd.DataFrame] = []
        for name in ("train", "valid", "test"):
            w = getattr(windows, name)
            targets = events[(events["day"] >= _day(w.start)) & (events["day"] <= _day(w.end))]
            targets = targets.reset_index(drop=True)
            if name == "train":
                targets = sample_negatives(
                    targets, cfg.preprocessing.negative_rate, cfg.preprocessing.sampling_seed
                )
            n_pos = int(targets["label"].sum()) if len(targets) else 0
            if len(targets) == 0 or n_pos == 0 or n_pos == len(targets):
                read = int(((tables.events["day"] >= _day(w.start))
                            & (tables.events["day"] <= _day(w.end))).sum())  # fmt: skip
                where = (
                    "the data has no events on those days (a missing partition?)"
                    if read == 0
                    else f"{read} events were read for it"
                )
                if read == 0 and cfg.dates.mode is DatesMode.relative and not cfg.dates.anchor:
                    where += (
                        f"; relative windows end on the data's last day, {last}: if that is a "
                        f"stray event, set dates.anchor to the last day of the real data"
                    )
                raise ConfigError(
                    f"dates: the {name} window {w} has {len(targets)} rows and {n_pos} positives "
                    f"after preprocessing ({where}); it needs both classes. Widen "
                    f"dates.{name}_days, move dates.anchor, or relax preprocessing "
                    f"(e.g. preprocessing=none)"
                )
            fewest = min(n_pos, len(targets) - n_pos)
            if len(targets) < MIN_WINDOW_ROWS or fewest < MIN_CLASS:
                # metrics of a handful of rows are 0 or 1 by chance (2 test rows: AUC 1.0)
                earlier = (w.end - timedelta(days=1)).isoformat()
                said = (
                    f"dates: the {name} window {w} has only {len(targets)} rows ({n_pos} "
                    f"positives) after preprocessing: metrics and early stopping on so few rows "
                    f"are mostly chance. Widen dates.{name}_days (e.g. dates.{name}_days=7), "
                    f"or, when the data's last day is partial, end the windows earlier (e.g. "
                    f"dates.anchor={earlier})"
                )
                if len(targets) < MIN_WINDOW_ROWS:
                    raise ConfigError(f"{said}; it needs at least {MIN_WINDOW_ROWS} rows")
                log.warning("%s (fewer than %d rows of one label)", said, MIN_CLASS)
            # sort by (user, day, ts) so ranking groups are contiguous; stable for determinism
            parts.append(
                targets.sort_values(
                    ["user_id", "day", "ts", "item_id"], kind="mergesort", ignore_index=True
                )
            )
        warn_partial_days(windows, parts, cfg.preprocessing.negative_rate)
        # one pass for all three windows: every feature of a row depends only on the history
        # before its own day, so building them together gives the same values as one by one;
        # builders that are not built in are checked for that on the last training day's and
        # the first test day's rows
        all_targets = pd.concat(parts, ignore_index=True)
        X_all = build_matrix(
            all_targets,
            events,
            tables.items,
            tables.users,
            cfg.features,
            train=np.arange(len(all_targets)) < len(parts[0]),
            check_days=(_day(windows.train.end), _day(windows.test.start)),
        )
        feature_names = list(X_all.columns)
        offset = 0
        for name, targets in zip(("train", "valid", "test"), parts, strict=True):
            X = X_all.iloc[offset : offset + len(targets)].reset_index(drop=True)
            offset += len(targets)
            y = targets["label"].to_numpy(dtype="int8")
            grades = y.astype("int32") * 2
            if "click" in targets:
                grades = np.maximum(grades, targets["click"].to_numpy(dtype="int32"))
            splits[name] = Split(X=X, y=y, groups=group_ids(targets), grades=grades)
            hashes[name] = frame_hash(X, y)
            rows[name] = len(X)
        test_frame = parts[2]
        popularity = f"item_cr_{max_w}d"
        if popularity in feature_names:  # the baseline is the item's smoothed contact rate
            test_pop = splits["test"].X[popularity].to_numpy("float64")
        else:
            ctx = FeatureContext(
                events, tables.items, tables.users, (max_w,), cfg.features.smoothing
            )
            test_pop = item_history(test_frame, ctx)[popularity].to_numpy("float64")
    matrices = Matrices(
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        test_frame=test_frame,
        test_popularity=test_pop,
        feature_names=feature_names,
        slice_hashes=hashes,
        rows=rows,
        valid_rows_hash=rows_hash(parts[1]),
        preprocess={
            "duplicates_removed": stats.duplicates,
            "bot_users_removed": stats.bot_users,
            "bot_rows_removed": stats.bot_rows,
            "rare_item_rows_removed": stats.rare_item_rows,
        },
    )
    if key is not None:  # one set is kept: a sweep walks its grid with the model varying fastest
        _prepared[key] = matrices
    return resolved, windows, version, matrices


#: the config sections the matrices depend on (with the data version and the code)
MATRIX_SECTIONS = ("data", "dates", "preprocessing", "features")
#: the matrices of the last `prepare` in this process, by everything they were built from: the
#: jobs of a sweep that differ only in the model (same process) share them
_prepared: dict[tuple[Any, ...], Matrices] = {}


def _reusable(key: tuple[Any, ...]) -> Matrices | None:
    """The matrices prepared earlier for `key`, if their content hashes still match."""
    matrices = _prepared.get(key)
    if matrices is None:
        return None
    for name in ("train", "valid", "test"):
        split = getattr(matrices, name)
        if frame_hash(split.X, split.y) != matrices.slice_hashes[name]:
            log.warning("the kept %s matrix changed since it was built; building again", name)
            _prepared.clear()
            return None
    return matrices


RESULT_KEYS = ("data", "dates", "preprocessing", "features", "model")


def sections_hash(container: dict[str, Any], sections: tuple[str, ...] = RESULT_KEYS) -> str:
    """sha256 of the given config sections (by default those that decide the model)."""
    relevant = {k: container[k] for k in sections if k in container}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _write_plot_data(
    out: Path, curves: dict[str, list[float]], pr: tuple[np.ndarray, np.ndarray] | None
) -> None:
    """CSV data behind the plots, for `dvc plots show/diff`."""
    out.mkdir(parents=True, exist_ok=True)
    if curves:
        frame = pd.DataFrame(curves)
        valid = [c for c in frame.columns if c.startswith("valid_")]
        frame.insert(0, "iteration", np.arange(1, len(frame) + 1))
        frame["objective"] = frame[valid[0]] if valid else np.nan
        frame.to_csv(out / "learning_curve.csv", index=False)
    if pr is not None:
        precision, recall = pr
        step = max(1, len(recall) // 500)
        pd.DataFrame({"recall": recall[::step], "precision": precision[::step]}).to_csv(
            out / "pr_curve.csv", index=False
        )


def resolve_windows(
    cfg: RunConfig, root: Path, data_range: tuple[date, date] | None = None
) -> tuple[RunConfig, DateWindows]:
    """The config with absolute dates, resolved against the data's date range."""
    from replayml.data.load import date_range

    first, last = data_range or date_range(cfg.data, root)
    windows = resolve_dates(cfg.dates, first, last)
    return with_absolute_dates(cfg, windows), windows


#: LightGBM's lambdarank refuses a query (here one user-day) with more rows than this
RANKER_MAX_GROUP_ROWS = 10_000


#: a test window with fewer rows a day than this share of the training window's is said
SHORT_TEST_SHARE = 0.5


#: a last day whose last event is this long before midnight (UTC) may be cut off
CUT_OFF_GAP = timedelta(hours=3)


def warn_short_test_window(windows: DateWindows, m: Matrices) -> None:
    """Say when the test window holds far fewer rows a day than the training window and its
    events stop hours before the day's end: a dump cut off during its last day scores the model
    on part of a day. (A quiet day, a weekend, that runs to the evening is not one.)"""

    def per_day(w: Window, rows: int) -> float:
        return rows / ((w.end - w.start).days + 1)

    train, test = per_day(windows.train, m.rows["train"]), per_day(windows.test, m.rows["test"])
    if not (train > 0 and test < SHORT_TEST_SHARE * train) or m.test_frame.empty:
        return
    last = pd.Timestamp(m.test_frame["ts"].max())
    if pd.Timestamp(windows.test.end + timedelta(days=1)) - last < CUT_OFF_GAP:
        return
    log.warning(
        "the test window %s..%s has %.0f rows a day against %.0f in the training window, and "
        "its last event is at %s: a dump cut off during its last day? The test metrics then "
        "describe part of a day; set dates.anchor=%s (the day before) if so",
        windows.test.start, windows.test.end, test, train, last,
        windows.test.end - timedelta(days=1),
    )  # fmt: skip


def warn_partial_days(
    windows: DateWindows, parts: list[pd.DataFrame], negative_rate: float = 1.0
) -> None:
    """Say when a day of the validation or test window holds far fewer rows than a typical
    training day and its events cover only part of it (they start or stop hours from
    midnight): a missing day whose neighbour's zone-aware times spill a few hours into it,
    or a dump cut short. Early stopping or the test metrics then rest on those hours only.
    (A quiet day spread over the whole day is not one; a test window cut off at its end is
    `warn_short_test_window`'s.)"""
    per_day = parts[0].groupby("day").size()
    if per_day.empty:
        return
    train_days = pd.date_range(_day(windows.train.start), _day(windows.train.end), freq="D")
    gaps = [d.date().isoformat() for d in train_days if d not in per_day.index]
    if gaps:
        shown = ", ".join(gaps[:5]) + (f" and {len(gaps) - 5} more" if gaps[5:] else "")
        log.warning(
            "dates: the training window %s..%s has no events on %d of its %d days (%s): a "
            "missing partition? The model learns from fewer days than the window says, and "
            "history features look back over the gap",
            windows.train.start, windows.train.end, len(gaps), len(train_days), shown,
        )  # fmt: skip
    # a weekend of business-hours data is quiet every week: compare a day with the training
    # window's days of the same weekday when it has some
    # (the training window keeps only negative_rate of its negatives: scale back to all rows)
    weekdays = per_day.groupby(per_day.index.dayofweek).median() / negative_rate
    overall = float(per_day.median()) / negative_rate
    for name, frame, w in (
        ("validation", parts[1], windows.valid),
        ("test", parts[2], windows.test),
    ):
        if frame.empty:
            continue
        days = frame.groupby("day")["ts"].agg(["size", "min", "max"])
        for day, (rows, first, last) in days.iterrows():
            typical = float(weekdays.get(day.dayofweek, overall))
            late = first - day >= CUT_OFF_GAP
            early = day + pd.Timedelta(days=1) - last >= CUT_OFF_GAP
            if rows >= SHORT_TEST_SHARE * typical:
                continue
            if not (late or early):  # the whole day, thinly: rows missing all through it
                log.warning(
                    "dates: the %s window's day %s has %d rows against %.0f on a typical "
                    "training %s, spread over the whole day: part of the day's export missing "
                    "(a shard or file of it?), or a very quiet day. %s on those rows: check the "
                    "day's data, or move dates.anchor past it",
                    name, day.date(), rows, typical, day.day_name(),
                    "Early stopping rests" if name == "validation" else "The test metrics rest",
                )  # fmt: skip
                continue
            if name == "test" and early and not late and day == _day(w.end):
                continue  # a dump cut off during its last day: said with its own advice
            log.warning(
                "dates: the %s window's day %s has %d rows against %.0f on a typical training "
                "%s, all between %s and %s (UTC): only part of a day (the day before or after "
                "missing from the data, its zone-aware times spilling into this UTC day, or a "
                "dump cut short?). %s on those hours only: move dates.anchor or "
                "widen dates.%s_days past it, or add the missing data",
                name, day.date(), rows, typical, day.day_name(), first.strftime("%H:%M"),
                last.strftime("%H:%M"),
                "Early stopping rests" if name == "validation" else "The test metrics rest",
                "valid" if name == "validation" else "test",
            )  # fmt: skip


def check_ranking_groups(cfg: RunConfig, m: Matrices) -> None:
    """Refuse, before any run exists, user-days too large for LightGBM's lambdarank."""
    if cfg.model.kind is not ModelKind.lgbm_ranker:
        return
    for name, split in (("train", m.train), ("validation", m.valid)):
        sizes = np.bincount(split.groups)
        too_big = int((sizes > RANKER_MAX_GROUP_ROWS).sum())
        if too_big:
            fix = (
                f"drop such users with preprocessing.bot_max_events_per_day (now "
                f"{cfg.preprocessing.bot_max_events_per_day}; e.g. =1000), or train model=lgbm"
                if name == "train"
                else "bots are judged on the training days only, so preprocessing keeps "
                "them: drop such users from the data (e.g. one id for all anonymous visitors), "
                "move dates.anchor, or train model=lgbm"
            )
            raise ConfigError(
                f"model=lgbm_ranker: {too_big} user-day(s) of the {name} window have more than "
                f"{RANKER_MAX_GROUP_ROWS} events (the largest {int(sizes.max())}), LightGBM's "
                f"limit for one ranking group; {fix}"
            )


def prepare_cached(
    cfg: RunConfig,
    root: Path,
    features_dir: Path,
    steps: Steps,
    data_range: tuple[date, date] | None = None,
) -> tuple[RunConfig, DateWindows, DataVersion, Matrices]:
    """Like `prepare`, from matrices cached by `replayml features` (checked, not trusted)."""
    from replayml import matrices

    resolved, _ = resolve_windows(cfg, root, data_range)
    with steps.step("reading cached features"):
        windows, version, m = matrices.load(root / features_dir, resolved, root)
    return resolved, windows, version, m


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys to string values (lists as JSON), for MLflow params."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = "null" if value is None else str(value)
    return out


def foreign_package_files(project_root: Path, package: Path = _PACKAGE_DIR) -> list[str]:
    """The package's source files that differ from (or are missing in) the project's
    `src/replayml`: empty when the code that runs is the project's, or the project has none
    (it then runs the installed package, as its replays do)."""
    ours = project_root / "src" / "replayml"
    if package.is_relative_to(project_root.resolve()) or not ours.is_dir():
        return []  # the project's own code, or a project that uses the installed package
    names = {p.relative_to(package) for p in package.rglob("*.py")}
    names |= {p.relative_to(ours) for p in ours.rglob("*.py")}
    differ = []
    for name in sorted(names):
        a, b = package / name, ours / name
        if not (a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()):
            differ.append(name.as_posix())
    return differ


#: replayml's source files as the first run of this process found them: the modules imported
#: then are what its later runs (a sweep's jobs) execute, whatever the files say by then
_FIRST_SEEN: dict[str, str] = {}


def _package_files() -> dict[str, str]:
    """sha256 of each replayml source file, by its path in the package."""
    return {
        p.relative_to(_PACKAGE_DIR).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in _PACKAGE_DIR.rglob("*.py")
    }


def note_loaded_code() -> None:
    """Remember the package's files as first seen (call when a run starts)."""
    for name, digest in _package_files().items():
        _FIRST_SEEN.setdefault(name, digest)


def code_moved(root: Path, started: dict[str, str]) -> list[str]:
    """Why the code recorded at the run's start may not be the code that ran: a Python file of
    the checkout changed during the run (`started`: `python_files` then), or a module this
    process imported changed on disk since. Other files (docs, data, the run's own outputs)
    and commits that leave the files as they were do not count."""
    reasons = []
    now = python_files(root)
    edited = sorted(f for f in started.keys() | now.keys() if started.get(f) != now.get(f))
    if edited:
        reasons.append(
            "Python files of the checkout changed while the run trained ("
            + ", ".join(edited[:5])
            + (", …" if len(edited) > 5 else "")
            + "): the run records the code as it started, which may not be the code that "
            "ran, so train again with the checkout left alone"
        )
    current = _package_files()
    loaded = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(_PACKAGE_DIR):
            loaded.add(Path(file).resolve().relative_to(_PACKAGE_DIR).as_posix())
    changed = sorted(f for f in loaded if current.get(f) != _FIRST_SEEN.get(f, current.get(f)))
    if changed:
        reasons.append(
            f"replayml's {', '.join(changed[:5])} changed after this process imported "
            f"{'it' if len(changed) == 1 else 'them'} (an edit during a sweep?): the code "
            f"that ran is not the code recorded, so train again"
        )
    return reasons


def replayability(
    cfg: RunConfig, code: CodeVersion, data: DataVersion, project_root: Path | None = None
) -> list[str]:
    """Reasons this run could not be replayed exactly (empty when it can)."""
    reasons = []
    foreign = foreign_package_files(project_root) if project_root is not None else []
    if foreign:
        reasons.append(
            f"replayml ran from {_PACKAGE_DIR}, whose code differs from the project's "
            f"src/replayml in {len(foreign)} file(s) (e.g. {foreign[0]}): the recorded commit "
            f"is not the code that ran. Train with the project's environment (`make run`, "
            f"or .venv/bin/python train.py)"
        )
    if cfg.model.kind is not ModelKind.popularity and not cfg.model.deterministic:
        reasons.append("model.deterministic=false: LightGBM may build different trees")
    if not code.available:
        reasons.append("the project is not a git repository: no code version")
    elif project_root is not None:
        imported = [
            f
            for f in (getattr(m, "__file__", None) for m in list(sys.modules.values()))
            if isinstance(f, str) and f.endswith(".py")
        ]
        # replayml's own checkout, when it runs from one other than the project's: its code is
        # compared with the project's by `foreign_package_files`, and what sits beside it
        # (its tests, the caller's harness) is not the run's code
        home = _PACKAGE_DIR.parent.parent if _PACKAGE_DIR.parent.name == "src" else _PACKAGE_DIR
        unrecorded = unrecorded_modules(project_root, imported, exempt=(home,))
        ignored = unrecorded.ignored
        if ignored:
            reasons.append(
                f"{', '.join(ignored[:5])} {'was' if len(ignored) == 1 else 'were'} imported by "
                f"this run but {'is' if len(ignored) == 1 else 'are'} ignored by git "
                f"(.gitignore or .git/info/exclude): that code is in no commit and not in the "
                f"run's diff, so track it (`git add -f`) or move it out of the ignored path"
            )
        if unrecorded.outside:
            named = ", ".join(unrecorded.outside[:5])
            reasons.append(
                f"{named} {'was' if len(unrecorded.outside) == 1 else 'were'} imported by this "
                f"run from outside the git checkout and the Python installation (PYTHONPATH, "
                f"sys.path): that code is in no commit and not in the run's diff, so move it "
                f"into the repository, or install it as a package pinned in uv.lock"
            )
        if unrecorded.linked:
            named = ", ".join(f"{link} -> {target}" for link, target in unrecorded.linked[:5])
            reasons.append(
                f"this run imported code through symlinks in the checkout to files outside it "
                f"({named}): git records only where a link points, not that code, so put the "
                f"file itself in the repository in place of the link"
            )
        if unrecorded.nested:
            named = ", ".join(f"{file} (in {repo}/)" for file, repo in unrecorded.nested[:5])
            reasons.append(
                f"this run imported code from a git repository nested in the checkout "
                f"({named}, which has its own .git): git records only that folder or its "
                f"commit id, not its files, so make its files part of the project's repository "
                f"(remove its .git and `git add` them) or install it as a package pinned in "
                f"uv.lock"
            )
    if not data.tracked:
        reasons.append("data.dvc_file is empty: the data is not versioned by DVC")
    return reasons


def _lineage_tags(
    resolved: RunConfig,
    windows: DateWindows,
    data: DataVersion,
    code: CodeVersion,
    env: Environment,
    m: Matrices,
    ctx: RunContext,
    reasons: list[str],
    config_hash: str,
) -> dict[str, str]:
    def shown(key: str, value: object) -> str:  # a value from the environment is not recorded
        return PLACEHOLDER if key in ctx.env_keys else str(value)

    tags = {
        "schema_version": SCHEMA_VERSION,
        "dataset": resolved.data.name,
        "data.dvc_file": data.dvc_file,
        "data.dvc_hash": data.dvc_hash,
        "data.path": data.path,
        "data.files_read": str(len(data.files_read)),
        "code.commit": code.commit,
        "code.branch": code.branch,
        "code.dirty": str(code.dirty).lower(),
        "env.lock_hash": env.lock_hash,
        "env.python": env.python,
        "env.platform": env.platform,
        "env.machine": env.machine,
        "env.cpu_count": str(env.cpu_count),
        "env.cpu": env.cpu,
        "env.thread_env": json.dumps(env.thread_env, sort_keys=True),
        "env.num_threads": shown("model.num_threads", resolved.model.num_threads),
        "seed.model": shown("model.seed", resolved.model.seed),
        "seed.sampling": shown(
            "preprocessing.sampling_seed", resolved.preprocessing.sampling_seed
        ),
        "model.kind": resolved.model.kind.value,
        "config_hash": config_hash,
        # each argument redacted whole (a secret value may hold spaces), then shell-quoted
        "command": command_line(redact_override),
        "overrides": json.dumps([redact_override(o) for o in ctx.overrides]),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        # which replayml code actually ran: the project's own `src/` or an installed copy
        "code.package_path": str(_PACKAGE_DIR),
        "code.package_in_project": str(
            _PACKAGE_DIR.is_relative_to(ctx.project_root.resolve())
        ).lower(),
        "features_cache": resolved.features_dir or "",
        # the code that built the matrices: a champion scored on them must have been built
        # by the same (tracking.champion)
        "features.code_hash": builder_code_hash(),
        # NDCG/recall give tied scores a shared position (runs before this rule have no tag)
        "metrics.ties": "shared",
        "replayable": str(not reasons).lower(),
        "not_replayable_reasons": "; ".join(reasons),
    }
    for pkg, version in env.packages.items():
        tags[f"env.{pkg}"] = version
    for key, value in windows.as_dict().items():
        tags[f"dates.{key}"] = value
    for name, h in m.slice_hashes.items():
        tags[f"slice_hash.{name}"] = h
        tags[f"rows.{name}"] = str(m.rows[name])
    tags["test_rows_hash"] = rows_hash(m.test_frame)
    if m.valid_rows_hash:
        tags["valid_rows_hash"] = m.valid_rows_hash
    for group, choice in ctx.choices.items():
        tags[f"choice.{group}"] = choice
    out = {TAG + k: v for k, v in tags.items()}
    # MLflow's own source tags, so the UI shows the commit too
    out.update({"mlflow.source.name": "train.py", "mlflow.source.type": "LOCAL"})
    out["mlflow.user"] = _user()
    if code.commit:
        out.update(
            {"mlflow.source.git.commit": code.commit, "mlflow.source.git.branch": code.branch}
        )
    return out


def _redacted_fingerprints(plain: dict[str, Any], redacted: dict[str, Any]) -> dict[str, str]:
    """A salted hash of each redacted value in the sections that decide the model, by key."""
    values, hidden = flatten(plain), flatten(redacted)
    return {
        key: fingerprint(values[key])
        for key, shown in hidden.items()
        if shown == PLACEHOLDER and key.split(".")[0] in RESULT_KEYS and key in values
    }


def _user() -> str:
    """Who ran it, as MLflow's UI shows it ("Created by")."""
    from replayml.lineage.environment import login_name

    return login_name()


def _requirements(env: Environment) -> list[str]:
    return [f"{p}=={env.packages[p]}" for p in ("mlflow", "lightgbm", "pandas", "numpy")]


def _save_local(path: Path, text: str) -> None:
    """Write a local copy atomically; a full disk is an error naming the path."""
    from replayml.errors import ReplaymlError

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReplaymlError(
            f"cannot write {path}: {exc.strerror or exc}; free some space or point "
            f"output_dir= at another disk"
        ) from exc


def _from_tracking(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) is MLflow's or its HTTP client's."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__module__.split(".")[0] in ("mlflow", "requests", "urllib3"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def _say_where_local_copies_are(out: Path, spec: Any) -> Iterator[None]:
    """When the tracking store fails mid-run, say so in one line naming the run, and point at
    the model and metrics kept locally."""
    from replayml.errors import TrackingError
    from replayml.tracking.store import explain

    try:
        yield
    except Exception as exc:
        if not isinstance(exc, TrackingError) and not _from_tracking(exc):
            raise
        said = exc if isinstance(exc, TrackingError) else explain(exc, spec)
        run_id = getattr(exc, "replayml_run_id", "")
        if run_id and not isinstance(exc, TrackingError):
            said = TrackingError(f"{said}; run {run_id} is marked FAILED")
        if (out / "metrics.json").exists():
            raise TrackingError(
                f"{said}. This run's model, metrics, config and lineage are kept in {out}"
            ) from exc
        if said is exc:
            raise
        raise said from exc


#: a sweep child's name: its overrides, cut to what the UI's run list shows well
CHILD_NAME_CHARS = 120


def _run_name(cfg: RunConfig, ctx: RunContext) -> str | None:
    """`tracking.run_name`; without one, a DVC experiment's name, and a sweep job's own
    overrides (redacted), so the UI's run list says which is which (MLflow would pick a
    random name)."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    if os.environ.get("DVC_EXP_NAME"):  # the `dvc.exp_name` tag holds it too
        return os.environ["DVC_EXP_NAME"]
    if not ctx.parent_run_id:
        return None
    name = " ".join(redact_override(o) for o in ctx.overrides) or "(defaults)"
    return name if len(name) <= CHILD_NAME_CHARS else name[: CHILD_NAME_CHARS - 1] + "…"


def _connect_and_import(spec: Any, kind: ModelKind, cancelled: threading.Event) -> None:
    """Open the tracking store (initialising it once), then import what training will need.

    Stops between steps once `cancelled` is set (the run failed before it started).
    """
    from replayml.tracking.store import open_experiment

    open_experiment(spec)
    modules = ["lightgbm"] if kind is not ModelKind.popularity else []
    for name in [*modules, "matplotlib.figure", "sklearn.metrics"]:
        if cancelled.is_set():
            return
        importlib.import_module(name)


def _check_output_dir(out: Path) -> None:
    """Create the run's output folder now: one that cannot be made is a config error before
    any data is read or any run exists."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"output_dir={out}: cannot create the folder ({exc.strerror or exc}); set "
            f"output_dir= to a folder you can write, or leave it unset (Hydra's run folder)"
        ) from None


class _Warnings(logging.Handler):
    """The warnings replayml logs while a run is prepared and trained, each once, redacted:
    what the run records (`replayml.warnings`) so a review shows them, not only a console."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        from replayml.redact import redact_text

        try:
            text = " ".join(redact_text(record.getMessage()).split())
        except Exception:  # a malformed record is the logger's problem, not the run's
            return
        if text not in self.seen:
            self.seen.append(text)


#: the tags that hold a run's warnings: how many, and their text (in full in the artifact)
WARNINGS_TAG, WARNINGS_COUNT_TAG = TAG + "warnings", TAG + "warnings.count"
WARNINGS_ARTIFACT = "replayml/warnings.txt"


def run_experiment(cfg: RunConfig, ctx: RunContext) -> RunResult:
    """Train, evaluate and record one run with its full lineage; return what it produced."""
    seen = _Warnings()
    ours = logging.getLogger("replayml")
    ours.addHandler(seen)
    try:
        return _run_experiment(cfg, ctx, seen)
    finally:
        ours.removeHandler(seen)


def _run_experiment(cfg: RunConfig, ctx: RunContext, seen: _Warnings) -> RunResult:
    from replayml.champion import SCORES_ARTIFACT as CHAMPION_SCORES_ARTIFACT
    from replayml.model.evaluate import (
        evaluate,
        pr_curves,
        prediction_hash,
        ranked_groups,
        save_figures,
        test_scores_hash,
    )
    from replayml.model.fit import fit, importance, predict, tree_hash
    from replayml.tracking.read import CONFIG_ARTIFACT, DIFF_ARTIFACT, TEST_SCORES_ARTIFACT
    from replayml.tracking.run import tracked_run
    from replayml.tracking.store import store_spec, workspace_origin

    root = ctx.project_root
    steps = Steps()
    spec = store_spec(cfg.tracking, root)
    # connecting to the store (bounded retries) and importing the training libraries run on
    # the second core while the data is read and the features are built; a store that cannot
    # be reached still fails the command before any run exists and before training starts
    # the checks that need no data read come first: a bad config fails at once
    data_range = check_config(cfg, root)
    if cfg.tracking.champion:
        from replayml.champion import check_form

        check_form(cfg.tracking.champion)
    _check_output_dir(ctx.output_dir)
    # the code as the run starts: what the modules imported from here on are read from
    note_loaded_code()
    # the run's own outputs (a store or an output folder inside the checkout) are not code
    own = [spec.local_dir, ctx.output_dir] if spec.local_dir else [ctx.output_dir]
    code = code_version(root, exclude=own)
    code_files = python_files(root)
    bulk = untracked_bulk(code)
    if bulk:
        log.warning(bulk)
    cancelled = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="replayml-connect") as pool:
        store_ready = pool.submit(_connect_and_import, spec, cfg.model.kind, cancelled)
        try:
            if cfg.features_dir:
                resolved, windows, data, m = prepare_cached(
                    cfg, root, Path(cfg.features_dir), steps, data_range
                )
            else:
                resolved, windows, data, m = prepare(cfg, root, steps, data_range)
            check_ranking_groups(resolved, m)
            warn_short_test_window(windows, m)
        except BaseException:
            cancelled.set()  # leaving the block waits only for the step under way
            raise
        with steps.step("connecting to the tracking store"):
            store_ready.result()
    champion = None
    if resolved.tracking.champion:
        from replayml import champion as champions

        with steps.step("loading the champion"):
            champion = champions.resolve(
                resolved.tracking.champion,
                spec,
                redact_tree(config_to_container(resolved), set(ctx.env_keys)),
                resolved.model.kind.value,
                m.feature_names,
                builder_code_hash(),
                (windows.test.start.isoformat(), windows.test.end.isoformat()),
            )
        resolved = champions.pinned_config(resolved, champion)
    # a queued DVC experiment trains in a copy without the remote-tracking branches
    pushed = commit_on_remote(workspace_origin(root), code.commit)
    if pushed.shared is False:
        log.warning(
            "%s: this run can be replayed only from a clone that has it; push it (`git push`) "
            "before sharing the run's link",
            pushed.where,
        )
    env = current_environment(root)
    if not env.lock_hash:
        log.warning(
            "%s is missing: this run records no lock hash, and `replayml replay --env` cannot "
            "rebuild its environment (restore it: `git checkout -- uv.lock`)",
            root / "uv.lock",
        )
    reasons = replayability(resolved, code, data, root)
    if reasons:
        log.warning("this run will not be replayable: %s", "; ".join(reasons))
    plain = config_to_container(resolved)
    container = redact_tree(plain, set(ctx.env_keys))
    fingerprints = _redacted_fingerprints(plain, container)
    if fingerprints:
        keys = ", ".join(sorted(fingerprints))
        log.warning(
            "%s decide%s the model but %s recorded redacted (secret-like, or from "
            "${oc.env:...}): a replay reads %s from REPLAYML_SECRET_<KEY> and checks %s "
            "against a salted hash; pass such values as plain overrides to keep them visible",
            keys, "s" if len(fingerprints) == 1 else "", "is" if len(fingerprints) == 1 else "are",
            "it" if len(fingerprints) == 1 else "them", "it" if len(fingerprints) == 1 else "them",
        )  # fmt: skip
    config_yaml = yaml.safe_dump(container, sort_keys=False)
    config_hash = sections_hash(container)
    tags = _lineage_tags(resolved, windows, data, code, env, m, ctx, reasons, config_hash)
    tags.update({FINGERPRINT_TAG + k: v for k, v in fingerprints.items()})
    user_tags = redact_tree(dict(resolved.tags), set(ctx.env_keys), "tags.")
    tags.update({k: str(v) for k, v in {**user_tags, **ctx.extra_tags}.items()})
    # as of this run's start: "true", "false", or "" when the repository has no git remote
    tags[TAG + "code.on_remote"] = {True: "true", False: "false", None: ""}[pushed.shared]
    if champion is not None:
        tags.update(champion.tags(TAG))
    params = flatten(container)
    out = ctx.output_dir
    out.mkdir(parents=True, exist_ok=True)

    with (
        _say_where_local_copies_are(out, spec),
        tracked_run(spec, _run_name(resolved, ctx), tags, ctx.parent_run_id) as run,
    ):
        skipped = run.log_params(params)
        if skipped:
            run.set_tags({TAG + "params_skipped": ",".join(skipped)})
        run.log_text(config_yaml, CONFIG_ARTIFACT)
        run.log_text(
            yaml.safe_dump(
                {"overrides": [redact_override(o) for o in ctx.overrides], "choices": ctx.choices},
                sort_keys=False,
            ),
            "replayml/overrides.yaml",
        )
        if code.dirty:
            run.log_exact_text(code.diff, DIFF_ARTIFACT)
        if data.tracked:
            run.log_dataset(
                m.train.X.head(100),
                name=f"{resolved.data.name[:80]}@{data.dvc_hash[:12]}",
                digest=m.slice_hashes["train"],
                source=(root / data.path).resolve().as_uri(),
                context="training",
            )
        with steps.step("training"):
            result = fit(m.train, m.valid, resolved.model, progress=steps.note)
        moved = code_moved(root, code_files)
        if moved:
            log.warning("this run will not be replayable: %s", "; ".join(moved))
            reasons += moved
            tags[TAG + "replayable"] = "false"
            tags[TAG + "not_replayable_reasons"] = "; ".join(reasons)
            run.set_tags(
                {k: tags[k] for k in (TAG + "replayable", TAG + "not_replayable_reasons")}
            )
        scores = predict(result, m.test.X, m.test_popularity)
        k = resolved.model.eval_at
        # the classifier and the popularity baseline (a smoothed contact rate) give
        # probabilities; the ranker's scores are not, so it has no log loss
        probabilities = resolved.model.kind is not ModelKind.lgbm_ranker
        metrics = evaluate(m.test.y, scores, m.test.groups, k, probabilities)
        baseline = evaluate(m.test.y, m.test_popularity, m.test.groups, k, True)
        all_metrics = {f"test_{n}": v for n, v in metrics.items()}
        all_metrics.update({f"baseline_{n}": v for n, v in baseline.items()})
        champion_scores = None
        if champion is not None:  # the champion's exact model on these very test rows
            champion_scores = champion.score(m.test.X)
            rival = evaluate(m.test.y, champion_scores, m.test.groups, k, probabilities)
            all_metrics.update({f"champion_{n}": v for n, v in rival.items()})
            log.info(
                "champion %s on this test window: %s",
                champion.pinned,
                ", ".join(f"{n} {v:.5f} (this run {metrics.get(n, float('nan')):.5f})"
                          for n, v in rival.items()),
            )  # fmt: skip
        all_metrics["best_iteration"] = float(result.best_iteration)
        # the validation metrics early stopping chose by, at the chosen iteration: what a sweep
        # should select on (tracking.objective=valid_best_auc), keeping the test window unseen
        for curve, values in sorted(result.curves.items()):
            if curve.startswith("valid_") and 0 < result.best_iteration <= len(values):
                best = float(values[result.best_iteration - 1])
                all_metrics[f"valid_best_{curve.removeprefix('valid_')}"] = best
        if result.booster is not None:  # every kind also gets what the other trained on, so
            # a sweep over model kinds can select on the validation window too
            valid_scores = predict(result, m.valid.X, np.zeros(len(m.valid.y)))
            valid = evaluate(m.valid.y, valid_scores, m.valid.groups, k, probabilities)
            for name, value in valid.items():
                all_metrics.setdefault(f"valid_best_{name}", value)
        all_metrics.update({f"rows_{n}": float(v) for n, v in m.rows.items()})
        # the user-days the ranking metrics average over (those with a positive)
        all_metrics["ranked_groups_test"] = float(ranked_groups(m.test.groups, m.test.y))
        all_metrics.update({n: float(v) for n, v in m.preprocess.items()})
        t_hash = tree_hash(result.booster)
        p_hash = prediction_hash(scores)
        s_hash = test_scores_hash(m.test.groups, m.test.y, scores)
        # local copies first: if the tracking store goes away now, nothing is lost
        kind = resolved.model.kind.value
        pr = pr_curves(m.test.y, {kind: scores, "popularity": m.test_popularity})
        sample = (
            m.test_frame[["user_id", "item_id", "ts", "label"]]
            .head(200)
            .assign(score=scores[:200], baseline=m.test_popularity[:200])
        )
        # every test row's score, label and user-day, in the test matrix's order: what
        # `replayml review` bootstraps to tell a real difference between two runs from noise
        test_scores = pd.DataFrame(
            {"group": m.test.groups, "label": m.test.y.astype("int8"), "score": scores}
        )
        champion_table = (
            None if champion_scores is None else test_scores.assign(score=champion_scores)
        )
        lineage = {
            "run_id": run.run_id,
            "tags": tags,
            "metrics": all_metrics,
            "tree_hash": t_hash,
            "prediction_hash": p_hash,
            "files_read": list(data.files_read),
            "feature_names": m.feature_names,
            "lgb_params": result.params,
            "environment": {"packages": env.packages, "thread_env": env.thread_env},
        }

        def write_copies(folder: Path) -> list[Path]:
            """The run's files in `folder`; returns the figures."""
            folder.mkdir(parents=True, exist_ok=True)
            figures = save_figures(
                folder / "plots", importance=importance(result.booster), curves=result.curves,
                pr=pr,
            )  # fmt: skip
            _write_plot_data(folder / "plots", result.curves, pr.get(kind))
            sample.to_csv(folder / "scored_sample.csv", index=False)
            test_scores.to_parquet(folder / Path(TEST_SCORES_ARTIFACT).name, index=False)
            if champion_table is not None:
                champion_table.to_parquet(
                    folder / Path(CHAMPION_SCORES_ARTIFACT).name, index=False
                )
            _save_local(folder / "lineage.json", json.dumps(lineage, indent=2, sort_keys=True))
            _save_local(folder / "config.yaml", config_yaml)
            _save_local(folder / "metrics.json", json.dumps(all_metrics, indent=2, sort_keys=True))
            if result.booster is not None:
                model = result.booster.model_to_string(result.best_iteration)
                _save_local(folder / "model.txt", model)
            return figures

        try:
            figures = write_copies(out)
        except (OSError, ReplaymlError) as exc:
            # a full disk or an unwritable output folder: the run fails naming the path (and
            # nothing is registered), but the trained model is kept elsewhere if it can be
            kept = ""
            try:
                spare = Path(tempfile.mkdtemp(prefix="replayml-run-"))
                write_copies(spare)
                kept = f"; this run's model, metrics, config and lineage are kept in {spare}"
            except (OSError, ReplaymlError):
                log.debug("no spare folder for the run's files either", exc_info=True)
            said = str(exc) if isinstance(exc, ReplaymlError) else f"cannot write to {out}: {exc}"
            raise ReplaymlError(said + kept) from exc
        sample_path = out / "scored_sample.csv"
        run.log_metrics(all_metrics)
        run.log_curves(result.curves)
        run.set_tags(
            {
                TAG + "tree_hash": t_hash,
                TAG + "prediction_hash": p_hash,
                TAG + "test_scores_hash": s_hash,
                **(
                    {}
                    if champion_scores is None
                    else {
                        TAG + "champion.test_scores_hash": test_scores_hash(
                            m.test.groups, m.test.y, champion_scores
                        )
                    }
                ),
                TAG + "best_iteration": str(result.best_iteration),
            }
        )
        for fig in figures:
            run.log_artifact(fig, "plots")
        run.log_artifact(sample_path, "replayml")
        run.log_artifact(out / Path(TEST_SCORES_ARTIFACT).name, "replayml")
        if champion_table is not None:
            run.log_artifact(out / Path(CHAMPION_SCORES_ARTIFACT).name, "replayml")
        run.log_artifact(out / "lineage.json", "replayml")
        if result.booster is not None and resolved.tracking.log_model:
            with steps.step("logging the model"):
                model_uri = run.log_lightgbm(
                    result.booster, m.test.X.head(5), _requirements(env), result.best_iteration
                )
            run.set_tags({TAG + "model_uri": model_uri})
        said = list(seen.seen)
        run.set_tags(
            {
                WARNINGS_COUNT_TAG: str(len(said)),
                **({WARNINGS_TAG: "\n".join(said)} if said else {}),
            }
        )
        if said:
            run.log_text("\n".join(said) + "\n", WARNINGS_ARTIFACT)
        url = run.url
        run_id = run.run_id
    return RunResult(
        run_id=run_id,
        url=url,
        metrics=all_metrics,
        tree_hash=t_hash,
        prediction_hash=p_hash,
        slice_hashes=m.slice_hashes,
        data_hash=data.dvc_hash,
        output_dir=out,
        replayable=not reasons,
        config=container,
    )
