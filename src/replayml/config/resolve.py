"""Turn a composed config into a typed `RunConfig`, and relative dates into absolute windows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from omegaconf import DictConfig, OmegaConf

from replayml.config.schema import DatesConfig, DatesMode, RunConfig
from replayml.errors import ConfigError


@dataclass(frozen=True)
class Window:
    """An inclusive range of whole days."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True)
class DateWindows:
    """The absolute train / validation / test windows of a run."""

    train: Window
    valid: Window
    test: Window

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in ("train", "valid", "test"):
            w: Window = getattr(self, name)
            out[f"{name}_start"] = w.start.isoformat()
            out[f"{name}_end"] = w.end.isoformat()
        return out


def to_run_config(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Validate a composed config against the schema and convert it once to typed objects.

    Every interpolation is resolved here, before any side effect, so a broken `${...}` fails
    now naming its key. Works for Hydra-composed configs and for a plain `params.yaml`.
    """
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        node = OmegaConf.masked_copy(node, [k for k in node if k != "hydra"])
        # as a plain container: a node that is already typed would keep a key Hydra added
        # with `+key=value` (and to_object would then drop it silently)
        plain = OmegaConf.to_container(node, resolve=False)
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
        # one resolution: an escaped `\${x}` stays the literal text `${x}`
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"invalid configuration: {exc}\n(`python train.py --cfg job` prints every key "
            f"with its value)"
        ) from exc
    assert isinstance(obj, RunConfig)
    return obj


def _parse_day(key: str, value: str | None) -> date:
    if value is None:
        raise ConfigError(
            f"dates.{key} is not set; absolute windows need all six dates "
            f"(e.g. `dates.{key}=2024-04-01`)"
        )
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(
            f"dates.{key}={value!r} is not a date; use YYYY-MM-DD, e.g. `dates.{key}=2024-04-01`"
        ) from exc


def resolve_dates(dates: DatesConfig, data_first: date, data_last: date) -> DateWindows:
    """Resolve the configured windows against the data's date range, checking order and bounds.

    Relative windows are anchored on the data's last date (or `dates.anchor`), never on today.
    """
    rng = f"the data covers {data_first.isoformat()}..{data_last.isoformat()}"
    _check_unused_date_keys(dates)
    if dates.mode is DatesMode.relative:
        for key in ("train_days", "valid_days", "test_days"):
            value = getattr(dates, key)
            if value < 1:
                raise ConfigError(f"dates.{key}={value} must be at least 1 day")
        anchor = _parse_day("anchor", dates.anchor) if dates.anchor else data_last
        test = Window(anchor - timedelta(days=dates.test_days - 1), anchor)
        valid_end = test.start - timedelta(days=1)
        valid = Window(valid_end - timedelta(days=dates.valid_days - 1), valid_end)
        train_end = valid.start - timedelta(days=1)
        train = Window(train_end - timedelta(days=dates.train_days - 1), train_end)
    else:
        train = Window(
            _parse_day("train_start", dates.train_start), _parse_day("train_end", dates.train_end)
        )
        valid = Window(
            _parse_day("valid_start", dates.valid_start), _parse_day("valid_end", dates.valid_end)
        )
        test = Window(
            _parse_day("test_start", dates.test_start), _parse_day("test_end", dates.test_end)
        )
    for name, w in (("train", train), ("valid", valid), ("test", test)):
        if w.end < w.start:
            raise ConfigError(
                f"dates: the {name} window {w} ends before it starts; "
                f"set dates.{name}_start <= dates.{name}_end"
            )
    if not (train.end < valid.start and valid.end < test.start):
        raise ConfigError(
            f"dates: windows must be in order train < valid < test without overlap, got "
            f"train={train} valid={valid} test={test}"
        )
    if train.start < data_first or test.end > data_last:
        raise ConfigError(
            f"dates: the windows train={train} valid={valid} test={test} fall outside the data; "
            f"{rng}. {_fitting_windows(dates, train, valid, test, data_first, data_last)}"
        )
    return DateWindows(train=train, valid=valid, test=test)


_ABSOLUTE_KEYS = ("train_start", "train_end", "valid_start", "valid_end", "test_start", "test_end")


def _check_unused_date_keys(dates: DatesConfig) -> None:
    """Refuse a date key the configured mode does not read: it would be silently ignored.

    An absolute config may carry the day counts and anchor that match its dates (every run
    records its windows that way); other values are refused.
    """
    if dates.mode is DatesMode.relative:
        given = [f"dates.{k}={getattr(dates, k)}" for k in _ABSOLUTE_KEYS if getattr(dates, k)]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: relative windows (dates.mode=relative, e.g. dates=last_7d) "
                f"are laid back from dates.anchor by dates.train_days/valid_days/test_days and "
                f"ignore explicit dates. Use dates=absolute with all six dates, or drop them "
                f"(dates.anchor=YYYY-MM-DD moves relative windows)"
            )
        return
    default = DatesConfig()
    for key in ("train_days", "valid_days", "test_days"):
        start, end = key.replace("days", "start"), key.replace("days", "end")
        value = getattr(dates, key)
        try:
            days = _parse_day(end, getattr(dates, end)) - _parse_day(start, getattr(dates, start))
        except ConfigError:
            return  # a missing or bad date is named by the absolute branch
        if value != getattr(default, key) and value != days.days + 1:
            raise ConfigError(
                f"dates.{key}={value} with dates.mode=absolute: absolute windows are set by "
                f"their dates (dates.{start}..dates.{end} = {days.days + 1} days); change the "
                f"dates, or use a relative mode (e.g. dates=last_7d dates.{key}={value})"
            )
    if dates.anchor and dates.anchor != dates.test_end:
        raise ConfigError(
            f"dates.anchor={dates.anchor} with dates.mode=absolute: absolute windows are set by "
            f"their dates (the test window ends at dates.test_end={dates.test_end}); drop "
            f"dates.anchor, or use a relative mode (e.g. dates=last_7d dates.anchor="
            f"{dates.anchor})"
        )


def _fitting_windows(
    dates: DatesConfig, train: Window, valid: Window, test: Window, first: date, last: date
) -> str:
    """The override that makes the windows fit the data, or why none can."""
    if dates.mode is DatesMode.absolute:
        return (
            f"Set dates.train_start >= {first.isoformat()} and dates.test_end <= "
            f"{last.isoformat()}"
        )
    if test.end > last or test.start < first:
        return f"Set dates.anchor to a day in that range (null = {last.isoformat()})"
    room = (valid.start - first).days  # days left for training before the validation window
    if room >= 1:
        return f"Use a shorter training window: dates.train_days={room} (or less)"
    return (
        f"The data is too short for dates.valid_days={dates.valid_days} and "
        f"dates.test_days={dates.test_days} plus one training day: lower them or add data"
    )


def with_absolute_dates(cfg: RunConfig, windows: DateWindows) -> RunConfig:
    """The same config with its date windows written out as absolute dates (what runs record)."""
    absolute = DatesConfig(
        mode=DatesMode.absolute,
        train_days=windows.train.days,
        valid_days=windows.valid.days,
        test_days=windows.test.days,
        anchor=windows.test.end.isoformat(),
        **windows.as_dict(),
    )
    return dataclasses.replace(cfg, dates=absolute)


def config_to_container(cfg: RunConfig) -> dict[str, Any]:
    """A plain, YAML-ready dict of a typed config (enums as their values)."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}
