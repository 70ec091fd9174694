"""A champion scored on a run's own test window (`tracking.champion=models:/NAME@ALIAS`).

A daily retrain tests on a new day, so its review against yesterday's model has no test rows
in common with it. With a champion, the run also scores that exact model (its registered
version, pinned when the run starts) on the run's own test matrix, built by the same feature
config from the same data, and records those scores beside its own: `replayml review` then
compares the two models on the same rows, with paired intervals.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from replayml.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "tracking.champion"
#: the config sections a champion must share with the run: its columns then mean the same
SHARED_SECTIONS = ("data", "preprocessing", "features")
#: the champion's score of every test row, in the run's test matrix order (like test_scores)
SCORES_ARTIFACT = "replayml/champion_test_scores.parquet"
#: metrics of the champion on the run's test window: `champion_auc`, `champion_ndcg_at_10`...
METRIC_PREFIX = "champion_"


@dataclass(frozen=True)
class Champion:
    """The model a run scores beside its own, and where it came from."""

    pinned: str  # models:/NAME/VERSION, or the run id when given as one
    run_id: str
    booster: Any
    feature_names: list[str]
    #: "same", "other" or "unknown": the champion's matrices were built by this feature code
    feature_code: str

    def tags(self, prefix: str) -> dict[str, str]:
        return {
            prefix + "champion.uri": self.pinned,
            prefix + "champion.run_id": self.run_id,
            prefix + "champion.feature_code": self.feature_code,
        }

    def score(self, X: Any) -> np.ndarray:
        """The champion's scores of the rows of `X` (its columns put in the champion's order)."""
        return np.asarray(self.booster.predict(X[self.feature_names]), dtype="float64")


def check_form(value: str) -> None:
    """Refuse, before any data is read, a value that names no model version or run."""
    import re

    if not re.fullmatch(r"models:/[^@/]+(@[\w-]+|/\d+)|[0-9a-f]{32}", value.strip()):
        raise _refuse(
            value,
            "name a registered version as models:/NAME@ALIAS (e.g. models:/reco@prod) or "
            "models:/NAME/VERSION, or a run id (32 hex digits)",
        )


def _refuse(value: str, why: str) -> ConfigError:
    return ConfigError(f"{KEY}={value}: {why}")


#: a sweep resolves `tracking.champion` once, before its jobs fan out: `VALUE=PINNED` here
SWEEP_ENV = "REPLAYML_SWEEP_CHAMPION"


def pin_for_sweep(value: str, spec: Any) -> None:
    """Resolve an alias once for all jobs of a sweep (each would look it up when it starts,
    and a promote during the sweep would judge its jobs against different models)."""
    import os

    check_form(value)
    from replayml.errors import ReplaymlError
    from replayml.registry import resolve_run_ref

    try:
        ref = resolve_run_ref(value, spec=spec, option=KEY)
    except ReplaymlError as exc:
        raise _refuse(value, str(exc)) from None
    if ref.version is not None:
        os.environ[SWEEP_ENV] = f"{value}={_pinned(ref)}"


def _pinned(ref: Any) -> str:
    return f"models:/{ref.version.name}/{ref.version.version}" if ref.version else ref.run_id


def _windows_overlap(run: Any, test: tuple[str, str]) -> str:
    """The champion's own training or validation window where it overlaps `test` ("" if not)."""
    for name in ("train", "valid"):
        start, end = run.tag(f"dates.{name}_start"), run.tag(f"dates.{name}_end")
        if start and end and start <= test[1] and test[0] <= end:
            return f"its {'training' if name == 'train' else 'validation'} window {start}..{end}"
    return ""


def resolve(
    value: str,
    spec: Any,
    container: dict[str, Any],
    kind: str,
    feature_names: list[str],
    code_hash: str,
    test: tuple[str, str],
) -> Champion:
    """Resolve `tracking.champion` (before the run exists) and load its model.

    Refuses (`ConfigError`, naming the key, the value and the fix) a champion that is not a
    finished run with a logged LightGBM model of the same kind, trained with other data,
    preprocessing or features config sections (`container` is this run's redacted config),
    or whose model takes other columns than `feature_names`.
    """
    import os

    from replayml.errors import ReplaymlError
    from replayml.pipeline import sections_hash
    from replayml.registry import resolve_run_ref
    from replayml.tracking.read import CONFIG_ARTIFACT, TAG_PREFIX, RunReader
    from replayml.tracking.store import process_tracking_uri

    swept, _, pinned_by_sweep = os.environ.get(SWEEP_ENV, "").partition("=")
    given = pinned_by_sweep if swept == value and pinned_by_sweep else value
    try:
        ref = resolve_run_ref(given, spec=spec, option=KEY)
        reader = RunReader(spec)
        run = reader.run(ref.run_id, finished=False)
    except ReplaymlError as exc:  # no such version, alias or run; an unusable store
        said = str(exc).replace("check --tracking-uri", "check tracking.uri")
        raise _refuse(value, said) from None
    pinned = _pinned(ref)
    if run.status != "FINISHED":
        raise _refuse(
            value,
            f"{pinned} is run {run.run_id}, which is {run.status}: only a finished run has a "
            f"model to compare with; name another version or run, or drop {KEY}",
        )
    theirs = run.params.get("model.kind", "")
    if theirs == "popularity":
        raise _refuse(
            value,
            f"{pinned} is a popularity baseline: it has no model to score, and every run logs "
            f"the popularity baseline's numbers beside its own (baseline_*); drop {KEY}",
        )
    overlap = _windows_overlap(run, test)
    if overlap:
        raise _refuse(
            value,
            f"{pinned} saw this run's test window {test[0]}..{test[1]} while it trained "
            f"({overlap}): its scores there are in-sample and would beat any new model; name "
            f"a champion trained before that window, or move dates.anchor to a day after "
            f"{run.tag('dates.valid_end')}",
        )
    if theirs != kind:
        raise _refuse(
            value,
            f"{pinned} is a model={theirs or '?'} run and this run trains model={kind}: their "
            f"scores are not on one scale; name a champion of the same kind, or drop {KEY}",
        )
    uri = run.tag("model_uri")
    if not uri:
        raise _refuse(
            value,
            f"run {run.run_id} logged no model (tracking.log_model=false?): there is nothing "
            f"to score; name a run or version that has one, or drop {KEY}",
        )
    recorded = yaml.safe_load(reader.text(run.run_id, CONFIG_ARTIFACT) or "") or {}
    differs = [
        s
        for s in SHARED_SECTIONS
        if sections_hash(recorded, (s,)) != sections_hash(container, (s,))
    ]
    if differs:
        keys = ", ".join(differs)
        raise _refuse(
            value,
            f"{pinned} was trained with other {keys} config than this run, so its columns "
            f"would be built differently here; compare such models on a common test window "
            f"instead (train this config with the champion's dates: `replayml review` then "
            f"pairs their test rows), or drop {KEY}",
        )
    import mlflow.lightgbm

    with process_tracking_uri(spec.uri):
        try:
            booster = mlflow.lightgbm.load_model(pinned if ref.version else uri)
        except Exception as exc:  # MLflow, network and file errors of an unusable artifact
            raise _refuse(
                value, f"cannot load the model of {pinned}: {str(exc).splitlines()[0][:300]}"
            ) from None
    names = list(booster.feature_name())
    if sorted(names) != sorted(feature_names):
        extra = sorted(set(names) - set(feature_names))
        missing = sorted(set(feature_names) - set(names))
        raise _refuse(
            value,
            f"{pinned} takes other columns than this run builds (only the champion's: "
            f"{', '.join(extra) or '-'}; only this run's: {', '.join(missing) or '-'}); "
            f"drop {KEY} or name a champion built by these builders",
        )
    recorded_code = run.tags.get(TAG_PREFIX + "features.code_hash", "")
    feature_code = (
        "unknown" if not recorded_code else "same" if recorded_code == code_hash else "other"
    )
    if feature_code != "same":
        log.warning(
            "%s=%s: %s; its scores here use this run's feature code, which may compute its "
            "columns differently from the matrices it was trained on",
            KEY,
            pinned,
            "the champion's run records no hash of the code that built its features"
            if feature_code == "unknown"
            else "the champion's features were built by other replayml code (a builder, the "
            "data loading or preprocessing changed since)",
        )
    return Champion(pinned, run.run_id, booster, names, feature_code)


def pinned_config(cfg: Any, champion: Champion) -> Any:
    """`cfg` with `tracking.champion` pinned to the version it resolved to (what runs record,
    as relative dates are recorded resolved: a replay scores the same model)."""
    return dataclasses.replace(
        cfg, tracking=dataclasses.replace(cfg.tracking, champion=champion.pinned)
    )
