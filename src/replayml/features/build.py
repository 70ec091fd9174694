"""Assemble the feature matrix for target rows from the registered builders."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd

from replayml.config.schema import FeaturesConfig
from replayml.errors import ConfigError
from replayml.features import registry
from replayml.features.registry import BuilderSpec, FeatureContext

log = logging.getLogger(__name__)

#: the target rows' own outcomes: builders never see them
OUTCOMES = ("label", "click")
#: the rule every builder follows, as errors state it
POINT_IN_TIME_RULE = (
    "a builder must use only events of days before each target row's day; see README "
    "(Bring your own data: writing a feature builder)"
)
#: relative tolerance when a builder's values are recomputed from a shorter history
RECOMPUTE_RTOL = 1e-9


def check_builders(
    cfg: FeaturesConfig, events: set[str], items: set[str] | None, users: set[str] | None
) -> None:
    """Validate builder names and the columns they need, before any data work."""
    if not cfg.builders:
        raise ConfigError("features.builders is empty; list at least one, e.g. user_history")
    if not cfg.lookback_days or min(cfg.lookback_days) < 1:
        raise ConfigError(
            f"features.lookback_days={list(cfg.lookback_days)} must list positive day counts"
        )
    for key in ("builders", "lookback_days"):
        values = list(getattr(cfg, key))
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise ConfigError(
                f"features.{key}={values} lists {', '.join(twice)} more than once: each would "
                f"make the same feature columns again; list each once"
            )
    if not cfg.smoothing > 0:
        raise ConfigError(
            f"features.smoothing={cfg.smoothing} must be greater than 0: it is the prior's "
            f"weight in the smoothed rates (a zero weight divides by zero for unseen users and "
            f"items), e.g. features.smoothing=20"
        )
    registry.check_available_columns(list(cfg.builders), events, items, users)


def _context(
    history: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    cfg: FeaturesConfig,
) -> FeatureContext:
    return FeatureContext(
        history=history,
        items=items,
        users=users,
        lookback_days=tuple(sorted(cfg.lookback_days)),
        smoothing=cfg.smoothing,
    )


def _without_outcomes(targets: pd.DataFrame) -> pd.DataFrame:
    return targets.drop(columns=[c for c in OUTCOMES if c in targets])


def _run(spec: BuilderSpec, targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """One builder's columns for `targets` (without outcomes), checked for shape and values."""
    try:
        part = spec.fn(targets, ctx)
    except KeyError as exc:
        if exc.args and exc.args[0] in OUTCOMES:
            raise ConfigError(
                f"feature builder {spec.name!r} reads targets[{exc.args[0]!r}]: a target row's "
                f"own outcome is what the model predicts, so builders get targets without "
                f"{' or '.join(OUTCOMES)}; use the outcomes of ctx.history's earlier days"
            ) from exc
        raise
    fix = "return pd.DataFrame({...}, index=targets.index) with one row per target row"
    if not isinstance(part, pd.DataFrame):
        raise ConfigError(
            f"feature builder {spec.name!r} returned a {type(part).__name__}, not a DataFrame; "
            f"{fix}"
        )
    if not part.index.equals(targets.index):
        raise ConfigError(
            f"feature builder {spec.name!r} returned {len(part)} rows whose index differs from "
            f"its {len(targets)} target rows' index; {fix}"
        )
    names = [str(c) for c in part.columns]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise ConfigError(
            f"feature builder {spec.name!r} returns column {twice[0]!r} more than once; "
            f"LightGBM needs each feature name once: rename one of them"
        )
    try:
        values = part.astype("float64")
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"feature builder {spec.name!r} returns columns that are not numbers "
            f"({dict(part.dtypes.astype(str))}): {exc}; return numbers (e.g. codes of a "
            f"category) or booleans"
        ) from exc
    if not spec.builtin:
        infinite = [c for c in values.columns if np.isinf(values[c].to_numpy()).any()]
        if infinite:
            raise ConfigError(
                f"feature builder {spec.name!r} returns infinite values in column "
                f"{infinite[0]!r}: LightGBM cannot split on them meaningfully; return NaN where "
                f"the value is unknown (e.g. a division by zero)"
            )
    log.debug("feature builder %s: %d columns", spec.name, values.shape[1])
    return values


def _build_parts(
    targets: pd.DataFrame, ctx: FeatureContext, names: Iterable[str]
) -> dict[str, pd.DataFrame]:
    """Each builder's columns, refusing a column name that two builders both return."""
    parts: dict[str, pd.DataFrame] = {}
    owner: dict[str, str] = {}
    targets = _without_outcomes(targets)
    for name in names:
        part = _run(registry.get(name), targets, ctx)
        for column in part.columns:
            if column in owner:
                raise ConfigError(
                    f"features.builders: {owner[column]!r} and {name!r} both return column "
                    f"{column!r}; LightGBM needs each feature name once: rename the column in "
                    f"one builder, or drop one of them from features.builders"
                )
            owner[column] = name
        parts[name] = part
    return parts


def build_features(
    targets: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    cfg: FeaturesConfig,
) -> pd.DataFrame:
    """Feature columns for `targets` (same index), computed from `history` before each day."""
    parts = _build_parts(targets, _context(history, items, users, cfg), cfg.builders)
    return pd.concat(parts.values(), axis=1)


def check_point_in_time(
    targets: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    cfg: FeaturesConfig,
    days: Iterable[pd.Timestamp],
    built: dict[str, pd.DataFrame] | None = None,
) -> None:
    """Refuse a builder whose columns, for the target rows of a day D in `days`, change when
    they are recomputed from those rows alone and the events of days before D.

    `built` holds each builder's columns for all of `targets` from the whole `history` (by
    default computed here for every builder of `cfg`). Raises `ConfigError` naming the
    builder, the day, the column and a row.
    """
    if built is None:
        built = _build_parts(targets, _context(history, items, users, cfg), cfg.builders)
    for day in sorted(set(days)):
        on_day = (targets["day"] == day).to_numpy()
        if not on_day.any():
            continue
        # numbered from 0 like the pipeline's targets
        rows = _without_outcomes(targets[on_day]).reset_index(drop=True)
        past = _context(history[history["day"] < day], items, users, cfg)
        for name, full in built.items():
            alone = _run(registry.get(name), rows, past)
            for column in full.columns:
                a = full[column].to_numpy()[on_day]
                b = alone[column].to_numpy() if column in alone else np.full(len(rows), np.nan)
                same = np.isclose(a, b, rtol=RECOMPUTE_RTOL, atol=0.0, equal_nan=True)
                if same.all():
                    continue
                at = int(np.argmin(same))
                row = rows.iloc[at]
                raise ConfigError(
                    f"feature builder {name!r} is not point-in-time: for the rows of "
                    f"{day.date()} its column {column!r} changes when the history is cut to "
                    f"the days before {day.date()} ({int((~same).sum())} of {len(rows)} rows; "
                    f"e.g. user_id={row['user_id']!r} item_id={row['item_id']!r}: {a[at]:.6g} "
                    f"from the whole history, {b[at]:.6g} from the past only): "
                    f"{POINT_IN_TIME_RULE}"
                )


def _mapping_keys(spec: BuilderSpec) -> list[str]:
    """The config keys that map the columns `spec` needs."""
    needs = (
        ("events", spec.needs_events),
        ("items", spec.needs_items),
        ("users", spec.needs_users),
    )
    return [
        registry.COLUMN_KEYS[table].get(c, f"data.{table}.{c}") for table, cs in needs for c in cs
    ]


def warn_unusable(features: pd.DataFrame, owner: dict[str, str], where: str) -> list[str]:
    """Warn naming every column that is all NaN, constant or has an infinite value in
    `features` (the training rows); returns the columns named."""
    problems: dict[str, list[str]] = {"all NaN": [], "constant": [], "infinite values": []}
    for column in features.columns:
        values = features[column].to_numpy(dtype="float64")
        missing = np.isnan(values)
        if missing.all():
            problems["all NaN"].append(column)
        elif np.isinf(values).any():
            problems["infinite values"].append(column)
        elif not missing.any() and values.min() == values.max():
            # (one value and NaNs is not constant: LightGBM splits on missing values)
            problems["constant"].append(column)
    said = [c for columns in problems.values() for c in columns]
    if said:
        lines = "; ".join(
            f"{kind}: " + ", ".join(f"{c} ({owner[c]})" for c in columns)
            for kind, columns in problems.items()
            if columns
        )
        keys = sorted({key for c in said for key in _mapping_keys(registry.get(owner[c]))})
        behind = f" ({', '.join(keys)})" if keys else ""
        log.warning(
            "feature columns the model cannot learn from on %s: %s. Check the dataset's "
            "columns behind them%s (e.g. an item attribute that is empty), or drop their "
            "builders from features.builders",
            where,
            lines,
            behind,
        )
    return said


def build_matrix(
    targets: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    cfg: FeaturesConfig,
    train: np.ndarray,
    check_days: Iterable[pd.Timestamp],
) -> pd.DataFrame:
    """`build_features` for a run: builders that are not built in are checked point-in-time
    on the rows of `check_days`, and unusable columns of the training rows (`train`, a
    boolean mask) are warned about."""
    parts = _build_parts(targets, _context(history, items, users, cfg), cfg.builders)
    own = {name: part for name, part in parts.items() if not registry.get(name).builtin}
    if own:
        check_point_in_time(targets, history, items, users, cfg, check_days, own)
    features = pd.concat(parts.values(), axis=1)
    owner = {column: name for name, part in parts.items() for column in part.columns}
    days = targets.loc[train, "day"]
    where = (
        f"the training rows ({days.min().date()}..{days.max().date()})"
        if len(days)
        else "the training rows"
    )
    warn_unusable(features[train], owner, where)
    return features
