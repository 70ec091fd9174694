"""The feature-builder registry: a builder is a pure function registered under a name.

Every module of the `replayml.features` package is imported before the builders are listed,
so a builder in a module of its own (`src/replayml/features/news.py`) is found by its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from replayml.errors import ConfigError


@dataclass(frozen=True)
class FeatureContext:
    """Everything a builder may read.

    `history` holds every event the run loaded, the validation and test days included: for a
    target row of day D a builder may use only the events of days before D (the run checks
    builders that are not built in, see `build.check_point_in_time`). The targets a builder
    gets hold no outcome (`label`, `click`) of their own rows.
    """

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

    @property
    def builtin(self) -> bool:
        """Whether this is one of replayml's own builders (`builders.py`)."""
        return self.fn.__module__ == BUILTIN_MODULE


#: the module of replayml's own builders: tested to be point-in-time, so not re-checked per run
BUILTIN_MODULE = "replayml.features.builders"

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
        known = _REGISTRY.get(name)
        if known is not None and _where(known.fn) != _where(fn):
            raise ConfigError(
                f"feature builder name {name!r} is registered twice: by {_where(known.fn)} and "
                f"by {_where(fn)}; give one of them another name in its @register(...)"
            )
        _REGISTRY[name] = BuilderSpec(name, fn, events, items, users)
        return fn

    return deco


def _where(fn: Builder) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def available() -> list[str]:
    """Names of all registered builders, after importing every module of this package."""
    import replayml.features as package

    for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)  # registers the builders it defines
    return sorted(_REGISTRY)


def get(name: str) -> BuilderSpec:
    """The builder registered under `name`, or a `ConfigError` listing the choices."""
    names = available()
    if name not in _REGISTRY:
        raise ConfigError(
            f"features.builders contains unknown builder {name!r}; available: {names} (a "
            f"builder of your own goes in a module of src/replayml/features/; see README: "
            f"Writing a feature builder)"
        )
    return _REGISTRY[name]


#: the config key that maps each canonical column, per table
COLUMN_KEYS = {
    "events": {"click": "data.events.click", "position": "data.events.position"},
    "items": {
        "category": "data.items.category",
        "price": "data.items.price",
        "created": "data.items.created",
        "item_region": "data.items.region",
    },
    "users": {"user_region": "data.users.region"},
}


def check_available_columns(
    names: list[str], events: set[str], items: set[str] | None, users: set[str] | None
) -> None:
    """Fail before any work if chosen builders need columns the dataset does not map.

    Names every such builder with the config keys it needs, and the builders that can run.
    """
    problems: dict[str, list[str]] = {}
    for name in names:
        spec = get(name)
        keys: list[str] = []
        for needs, have, table in (
            (spec.needs_events, events, "events"),
            (spec.needs_items, items, "items"),
            (spec.needs_users, users, "users"),
        ):
            missing = [c for c in needs if have is None or c not in have]
            if missing and have is None:
                keys.append(f"data.{table}.path")
            keys += [COLUMN_KEYS[table].get(c, f"data.{table}.{c}") for c in missing]
        if keys:
            problems[name] = keys
    if problems:
        lines = "\n".join(f"  - {n!r} needs {', '.join(k)}" for n, k in problems.items())
        usable = [n for n in names if n not in problems]
        choice = f"features.builders=[{','.join(usable)}]" if usable else "features=minimal"
        raise ConfigError(
            f"features.builders lists builders that need columns the dataset does not "
            f"map:\n{lines}\nMap them in conf/data/ or keep the "
            f"builders it can feed: {choice} (features=minimal is the smallest set)"
        )
