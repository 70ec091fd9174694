"""Assemble the feature matrix for target rows from the registered builders."""

from __future__ import annotations

import logging

import pandas as pd

from replayml.config.schema import FeaturesConfig
from replayml.features import registry
from replayml.features.registry import FeatureContext

log = logging.getLogger(__name__)


def check_builders(
    cfg: FeaturesConfig, events: set[str], items: set[str] | None, users: set[str] | None
) -> None:
    """Validate builder names and the columns they need, before any data work."""
    from replayml.errors import ConfigError

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


def build_features(
    targets: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    cfg: FeaturesConfig,
) -> pd.DataFrame:
    """Feature columns for `targets` (same index), computed from `history` before each day."""
    ctx = FeatureContext(
        history=history,
        items=items,
        users=users,
        lookback_days=tuple(sorted(cfg.lookback_days)),
        smoothing=cfg.smoothing,
    )
    parts = []
    for name in cfg.builders:
        part = registry.get(name).fn(targets, ctx)
        log.debug("feature builder %s: %d columns", name, part.shape[1])
        parts.append(part)
    features = pd.concat(parts, axis=1)
    return features.astype("float64")
