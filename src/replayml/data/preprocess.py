"""Row filters applied before features. Pure: each returns a new frame, never mutates its input."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from replayml.config.schema import PreprocessingConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessStats:
    """How many rows each step removed (logged as run metrics)."""

    duplicates: int
    bot_users: int
    bot_rows: int
    rare_item_rows: int


def preprocess(
    events: pd.DataFrame,
    cfg: PreprocessingConfig,
    train_start: pd.Timestamp,
    train_end: pd.Timestamp,
) -> tuple[pd.DataFrame, PreprocessStats]:
    """De-duplicate, drop bot-like users and rare items, keeping row order otherwise."""
    out = events
    n0 = len(out)
    if cfg.dedup:
        out = out.drop_duplicates(ignore_index=True)
    duplicates = n0 - len(out)

    bot_users = 0
    n1 = len(out)
    if cfg.bot_max_events_per_day is not None:
        # judged on the bot_window_days days up to the end of the training window: what a
        # user does in the validation or test window must not decide which rows the model
        # trains on, and the training window's length must not decide the test rows
        since = train_end - pd.Timedelta(days=cfg.bot_window_days - 1)
        known = out[(out["day"] >= since) & (out["day"] <= train_end)]
        per_day = known.groupby(["user_id", "day"], sort=False).size()
        bots = per_day[per_day > cfg.bot_max_events_per_day].index.get_level_values(0).unique()
        bot_users = len(bots)
        out = out[~out["user_id"].isin(bots)].reset_index(drop=True)
    bot_rows = n1 - len(out)

    n2 = len(out)
    if cfg.min_item_support > 0:
        in_train = out[(out["day"] >= train_start) & (out["day"] <= train_end)]
        support = in_train.groupby("item_id", sort=False).size()
        keep = support[support >= cfg.min_item_support].index
        out = out[out["item_id"].isin(keep)].reset_index(drop=True)
    rare = n2 - len(out)
    stats = PreprocessStats(duplicates, bot_users, bot_rows, rare)
    log.info("preprocessing removed %s", stats)
    if n0 and (n0 - len(out)) / n0 > LARGE_REMOVAL:
        log.warning(
            "preprocessing removed %.0f%% of the %d events read (%s); if that is not what this "
            "dataset needs, tune preprocessing.bot_max_events_per_day / min_item_support / "
            "dedup or use preprocessing=none",
            100 * (n0 - len(out)) / n0,
            n0,
            stats,
        )
    return out, stats


#: share of the events read that preprocessing may remove before it says so loudly
LARGE_REMOVAL = 0.25


def sample_negatives(frame: pd.DataFrame, rate: float, seed: int) -> pd.DataFrame:
    """Keep every positive and a `rate` fraction of negatives, with its own seeded generator."""
    if rate >= 1.0:
        return frame
    rng = np.random.default_rng(seed)
    keep = (frame["label"].to_numpy() > 0) | (rng.random(len(frame)) < rate)
    return frame[keep].reset_index(drop=True)
