"""Dataclass schemas for every config group, stored in Hydra's ConfigStore.

A typo, a wrong type or an unknown option then fails at composition with Hydra's own message,
naming the key. Semantic checks (date windows against the data) live in `resolve.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import II, MISSING


class DatesMode(Enum):
    relative = "relative"
    absolute = "absolute"


class TimeUnit(Enum):
    """The unit of integer timestamps counted from the Unix epoch."""

    s = "s"
    ms = "ms"
    us = "us"
    ns = "ns"


class ModelKind(Enum):
    lgbm = "lgbm"
    lgbm_ranker = "lgbm_ranker"
    popularity = "popularity"


@dataclass
class EventsTable:
    """The impression log: a hive-partitioned folder (`date=YYYY-MM-DD/`) or one file.

    `timestamp` is a timestamp column (time-zone-aware ones are read in UTC) or, with
    `timestamp_unit`, integer times since the Unix epoch in that unit (e.g. MovieLens: s).
    `label` (and `click`) hold 0/1 or true/false.
    """

    path: str = "events"
    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "ts"
    timestamp_unit: TimeUnit | None = None
    label: str = MISSING
    click: str | None = None
    position: str | None = None


@dataclass
class ItemsTable:
    """Optional item attributes; a column set to null is simply not used."""

    path: str | None = None
    id: str = "item_id"
    category: str | None = None
    price: str | None = None
    created: str | None = None
    region: str | None = None


@dataclass
class UsersTable:
    """Optional user attributes."""

    path: str | None = None
    id: str = "user_id"
    region: str | None = None


@dataclass
class DataConfig:
    """A dataset: where it lives (inside the DVC-tracked folder) and how its columns map."""

    name: str = MISSING
    root: str = "data"
    dvc_file: str = "data.dvc"
    events: EventsTable = field(default_factory=EventsTable)
    items: ItemsTable = field(default_factory=ItemsTable)
    users: UsersTable = field(default_factory=UsersTable)


@dataclass
class DatesConfig:
    """Train / validation / test windows, in whole days.

    `relative`: the test window ends at `anchor` (null = the data's last date, never today's
    date) and the windows are laid back to back before it. `absolute`: explicit inclusive dates.
    A run always records the absolute dates it resolved to.
    """

    mode: DatesMode = DatesMode.relative
    train_days: int = 14
    valid_days: int = 1
    test_days: int = 1
    anchor: str | None = None
    train_start: str | None = None
    train_end: str | None = None
    valid_start: str | None = None
    valid_end: str | None = None
    test_start: str | None = None
    test_end: str | None = None


@dataclass
class PreprocessingConfig:
    """Row filters applied before features; each is pure and recorded."""

    dedup: bool = True
    bot_max_events_per_day: int | None = None
    #: bots are judged on this many days up to the end of the training window, whatever the
    #: window's length, so runs that differ only in train_days are scored on the same test rows
    bot_window_days: int = 28
    min_item_support: int = 0
    negative_rate: float = 1.0
    sampling_seed: int = 7


@dataclass
class FeaturesConfig:
    """Registered feature builders to use, and their lookback windows in days."""

    builders: list[str] = field(default_factory=list)
    lookback_days: list[int] = field(default_factory=lambda: [7, 28])
    smoothing: float = 20.0


#: the values of `model.click_grade`
CLICK_GRADES = (0, 1)


@dataclass
class ModelConfig:
    """The model kind and its LightGBM parameters, always under the determinism profile."""

    kind: ModelKind = ModelKind.lgbm
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.9
    bagging_fraction: float = 1.0
    bagging_freq: int = 0
    lambda_l2: float = 1.0
    max_bin: int = 255
    num_boost_round: int = 400
    early_stopping_rounds: int = 30
    seed: int = 42
    num_threads: int = II("replayml_threads:")  # cores / parallel sweep jobs, resolved per run
    deterministic: bool = True
    eval_at: int = 10
    #: the ranker's grade of a click without a contact: 0 trains on the contact label alone,
    #: what every metric and early stopping judge; 1 ranks such clicks between (contact = 2)
    click_grade: int = 0

    def __post_init__(self) -> None:
        if self.click_grade not in CLICK_GRADES:
            from replayml.errors import ConfigError

            raise ConfigError(
                f"model.click_grade={self.click_grade} is not valid: use model.click_grade=0 "
                f"(the ranker trains on the contact label alone, what it is judged on) or "
                f"model.click_grade=1 (a click without a contact is grade 1, a contact 2)"
            )


@dataclass
class TrackingConfig:
    """Where runs go. `uri: null` means $MLFLOW_TRACKING_URI, else the project's SQLite store."""

    uri: str | None = None
    store_dir: str = "mlruns"
    experiment: str = "replayml"
    ui_url: str | None = None
    run_name: str | None = None
    log_model: bool = True
    request_timeout: int = 5
    max_retries: int = 0
    objective: str = "test_auc"
    #: max or min; null = the objective's usual direction (min for losses, max for AUC, NDCG...)
    objective_direction: str | None = None
    #: a model scored on this run's test window too (models:/NAME@ALIAS, models:/NAME/VERSION or
    #: a run id), recorded pinned to its version: the review then compares on the same rows
    champion: str | None = None


@dataclass
class RunConfig:
    """The whole, typed configuration of one training run."""

    data: DataConfig = MISSING
    dates: DatesConfig = MISSING
    preprocessing: PreprocessingConfig = MISSING
    features: FeaturesConfig = MISSING
    model: ModelConfig = MISSING
    tracking: TrackingConfig = MISSING
    output_dir: str | None = None
    features_dir: str | None = None  # read cached matrices (the DVC `features` stage's output)
    tags: dict[str, str] = field(default_factory=dict)


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="replayml_schema", node=RunConfig)


def _unique_suffix() -> str:
    """A per-process suffix so two runs started in the same second never share a folder
    (resolved once per config: a sweep's jobs in other processes keep the sweep's)."""
    import os

    return str(os.getpid())


def _threads_per_job() -> int:
    """LightGBM threads for one job: the cores split across a sweep's parallel jobs.

    The resolved number is what a run records, so every job stays replayable.
    """
    import os

    jobs = max(1, int(os.environ.get("REPLAYML_PARALLEL_JOBS", "1")))
    return max(1, (os.cpu_count() or 1) // jobs)


def register_resolvers() -> None:
    """Register the OmegaConf resolvers our configs use (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("replayml_unique"):
        # cached in the config, like Hydra's `${now:}`: a sweep's job configs copy the sweep
        # config's cache, so jobs in other processes (joblib's workers) resolve
        # hydra.sweep.dir to the folder the sweep announced, not to their own pid
        OmegaConf.register_new_resolver("replayml_unique", _unique_suffix, use_cache=True)
    if not OmegaConf.has_resolver("replayml_threads"):
        OmegaConf.register_new_resolver("replayml_threads", _threads_per_job)
