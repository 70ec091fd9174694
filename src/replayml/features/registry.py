"""The feature-builder registry: a builder is a pure function registered under a name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from replayml.errors import ConfigError


@dataclass(frozen=True)
class FeatureContext:
    """Everything a builder may read. `history` holds events strictly usable as the past."""

    history: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None
    lookback_days: tuple[int, ...]
    smoothing: float


Builder = Callable[[pd.DataFrame, FeatureContext], pd.DataFrame]


@dataclass(frozen=True)
class BuilderSpec:
    """A registered builder and the canonical columns it needs."""

    name: str
    fn: Builder
    needs_events: tuple[str, ...]
    needs_items: tuple[str, ...]
    needs_users: tuple[str, ...]


_REGISTRY: dict[str, BuilderSpec] = {}


def register(
    name: str,
    *,
    events: tuple[str, ...] = (),
    items: tuple[str, ...] = (),
    users: tuple[str, ...] = (),
) -> Callable[[Builder], Builder]:
    """Register `fn(targets, ctx) -> DataFrame` of new columns aligned with `targets`."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = BuilderSpec(name, fn, events, items, users)
        return fn

    return deco


def available() -> list[str]:
    """Names of all registered builders."""
    from replayml.features import builders  # noqa: F401  (registers on import)

    return sorted(_REGISTRY)


def get(name: str) -> BuilderSpec:
    """The builder registered under `name`, or a `ConfigError` listing the choices."""
    names = available()
    if name not in _REGISTRY:
        raise ConfigError(
            f"features.builders contains unknown builder {name!r}; available: {names}"
        )
    return _REGISTRY[name]


def check_available_columns(
    names: list[str], events: set[str], items: set[str] | None, users: set[str] | None
) -> None:
    """Fail before any work if a chosen builder needs a column the dataset does not map."""
    for name in names:
        spec = get(name)
        for needs, have, table in (
            (spec.needs_events, events, "events"),
            (spec.needs_items, items, "items"),
            (spec.needs_users, users, "users"),
        ):
            missing = [c for c in needs if have is None or c not in have]
            if missing:
                raise ConfigError(
                    f"features.builders contains {name!r}, which needs {table} column(s) "
                    f"{missing} that the dataset does not map; set them under data.{table} in "
                    f"conf/data/ or drop {name!r} from features.builders (e.g. features=minimal)"
                )
