"""Review a run against a baseline, as Markdown for a pull request (like `dvc exp diff --md`).

`review(run_id, baseline=..., spec=...) -> Review`: links to both runs, a metrics table with
deltas and regressions, the config keys that differ, the data (DVC hashes, date windows, row
counts, "same data"), the code (commits, dirty flags, replay verdicts). A baseline that is not
comparable (another dataset) is said so at the top, and no regression is
judged against it. Runs scored on the same test rows get a 95% interval for each delta from a
paired bootstrap of their recorded test scores (`replayml.model.bootstrap`), so a reviewer can
tell a real difference from the noise of the test set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import yaml

from replayml.errors import ReplaymlError, RunNotFoundError
from replayml.tracking.read import (
    CONFIG_ARTIFACT,
    DIFF_ARTIFACT,
    TAG_PREFIX,
    TEST_SCORES_ARTIFACT,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from replayml.model.bootstrap import Interval, Scored
    from replayml.registry import DeletedHolder
    from replayml.tracking.read import RecordedRun, RunReader
    from replayml.tracking.registry_store import VersionRecord
    from replayml.tracking.store import StoreSpec

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = ("auc", "avg_precision", "ndcg", "recall", "precision", "map")
LOWER_IS_BETTER = ("logloss", "loss", "rmse", "mae")
KEY_ORDER = ("test_auc", "test_avg_precision", "test_logloss", "test_ndcg_at_", "test_recall_at_")
# config sections that decide the model (the ones hashed into replayml.config_hash)
MODEL_SECTIONS = ("data.", "dates.", "preprocessing.", "features.", "model.")
WINDOWS = ("train", "valid", "test")
MAX_CELL = 300
UI_PARAM = "tracking.ui_url"  # the UI address a run was made with (its links use it)
RESAMPLES = 1000  # bootstrap resamples behind the intervals of the deltas
MIN_RESAMPLES = 200  # fewer make the ends of a 95% interval mostly chance
#: metrics computed over every row at once, across user-days
POOLED = ("auc", "avg_precision", "logloss")
RANKER = "lgbm_ranker"
WITHIN_USER_DAY = "ranker scores compare only within a user-day"


def pooled(metric: str) -> bool:
    """Whether a metric (`test_auc`, `valid_best_avg_precision`, ...) pools every row across
    user-days, so it cannot compare a ranker's scores with another kind's."""
    return any(metric == p or metric.endswith(f"_{p}") for p in POOLED)


def direction(metric: str) -> str | None:
    """`"max"`, `"min"` or None (no known better direction) for a metric name."""
    name = metric.lower()
    if any(k in name for k in LOWER_IS_BETTER):
        return "min"
    if any(k in name for k in HIGHER_IS_BETTER):
        return "max"
    return None


@dataclass(frozen=True)
class MetricRow:
    """One metric of the run next to the baseline's."""

    name: str
    run: float | None
    baseline: float | None
    better: str | None  # "max" / "min" / None

    @property
    def delta(self) -> float | None:
        if self.run is None or self.baseline is None:
            return None
        return self.run - self.baseline

    @property
    def relative(self) -> float | None:
        d = self.delta
        if d is None or self.baseline in (None, 0.0):
            return None
        return d / abs(self.baseline)  # type: ignore[arg-type]

    def status(self, tolerance: float = 0.0) -> str:
        """regressed / improved / same / n/a."""
        d = self.delta
        if d is None or self.better is None or math.isnan(d):
            return "n/a"
        worse = -d if self.better == "max" else d
        if worse > tolerance:
            return "regressed"
        if worse < -tolerance:
            return "improved"
        return "same"


@dataclass(frozen=True)
class ConfigChange:
    """A config key whose value differs (dotted path)."""

    key: str
    baseline: str
    run: str


@dataclass
class Review:
    """A run reviewed against an optional baseline."""

    run: RecordedRun
    baseline: RecordedRun | None
    baseline_label: str = ""
    run_label: str = ""
    not_comparable: list[str] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    config: list[ConfigChange] = field(default_factory=list)
    other_config: list[ConfigChange] = field(default_factory=list)
    tolerance: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: run id -> a summary of the uncommitted changes a dirty run was trained with
    diffs: dict[str, str] = field(default_factory=dict)
    #: metric -> 95% bootstrap interval of its delta (runs scored on the same test rows)
    intervals: dict[str, Interval] = field(default_factory=dict)
    #: how the intervals were made, or why there are none
    noise: str = ""
    #: run id -> (what stops others from replaying it, what could not be checked)
    sharing: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    #: metric -> why it is shown but never judged (pooled metrics of a ranker vs another kind)
    unjudged: dict[str, str] = field(default_factory=dict)
    markdown: str = ""

    @property
    def comparable(self) -> bool:
        return self.baseline is not None and not self.not_comparable

    def metric(self, name: str) -> MetricRow:
        """The row of one metric; `ReplaymlError` naming the known ones otherwise."""
        for row in self.metrics:
            if row.name == name:
                return row
        known = ", ".join(r.name for r in self.metrics) or "(none)"
        raise ReplaymlError(f"metric {name!r} is not recorded for run {self.run.run_id}: {known}")

    def regressed(self, metric: str, *, significant: bool = False) -> bool:
        """Whether `metric` is worse than the baseline's (False without a baseline); with
        `significant`, only when its bootstrap interval also lies wholly on the worse side.

        Raises `ReplaymlError` when the baseline is not comparable, the metric is missing from
        either run, the metric has no known better direction, or (`significant`) it has no
        interval.
        """
        row = self.metric(metric)
        if self.baseline is None:
            return False
        if self.not_comparable:
            raise ReplaymlError(
                f"cannot judge whether {metric} regressed: the baseline "
                f"{self.baseline.run_id} is not comparable ({'; '.join(self.not_comparable)})"
            )
        different = test_set_difference(self.run, self.baseline)
        if different:
            raise ReplaymlError(
                f"cannot judge whether {metric} regressed: {different}, so the metrics do not "
                f"measure the same thing; review against a baseline scored on the same test set"
            )
        if metric in self.unjudged:
            ndcg = next((r.name for r in self.metrics if r.name.startswith("test_ndcg_at_")), "")
            raise ReplaymlError(
                f"cannot judge whether {metric} regressed: {self.unjudged[metric]} (one run is "
                f"a ranker, the other another model kind), and {metric} pools every test row; "
                f"judge a per-user-day metric instead, e.g. --fail-on "
                f"{ndcg or 'test_ndcg_at_10'}"
            )
        if row.run is None or row.baseline is None:
            raise ReplaymlError(
                f"cannot judge whether {metric} regressed: it is recorded for only one of "
                f"run {self.run.run_id} and baseline {self.baseline.run_id}"
            )
        if row.better is None:
            raise ReplaymlError(
                f"cannot judge whether {metric} regressed: replayml does not know whether "
                f"higher or lower is better for it"
            )
        worse = row.status(self.tolerance) == "regressed"
        if not significant:
            return worse
        interval = self.intervals.get(metric)
        if interval is None:
            why = self.noise or "no interval of its delta could be computed"
            raise ReplaymlError(f"cannot judge whether {metric} regressed beyond the noise: {why}")
        return worse and interval.excludes_zero

    def within_noise(self, metric: str) -> bool:
        """Whether the metric's delta has a bootstrap interval that contains zero."""
        interval = self.intervals.get(metric)
        return interval is not None and not interval.excludes_zero

    @property
    def regressions(self) -> list[str]:
        """Metrics that regressed (empty when not comparable, scored on other test rows, or
        without a baseline)."""
        if not self.comparable or test_set_difference(self.run, self.baseline):  # type: ignore[arg-type]
            return []
        return [
            r.name
            for r in self.metrics
            if r.status(self.tolerance) == "regressed" and r.name not in self.unjudged
        ]


# --------------------------------------------------------------------------- reading


_YAML_SCALARS = {"True": "true", "False": "false", "None": "null"}


def _yaml_style(value: str) -> str:
    """A flattened config value as YAML writes it (params hold Python's `True`/`None`)."""
    return _YAML_SCALARS.get(value, value)


def _as_trained(config: dict[str, str]) -> dict[str, str]:
    """A run's flattened config with the values it trained with where a key is newer than the
    run: a ranker recorded before `model.click_grade` existed trained on grades (= 1)."""
    if config.get("model.kind") == "lgbm_ranker" and "model.click_grade" not in config:
        return {**config, "model.click_grade": "1"}
    return config


def _config(reader: RunReader, run: RecordedRun) -> dict[str, str]:
    """The run's flattened config, values YAML-style (true/false/null): its params, plus from
    the config artifact any value too long for a param (listed in `replayml.params_skipped`)."""
    params = {k: _yaml_style(v) for k, v in run.params.items()}
    skipped = [k for k in run.tag("params_skipped").split(",") if k]
    if skipped:
        from replayml.pipeline import flatten  # (pandas and numpy: only when needed)

        text = reader.text(run.run_id, CONFIG_ARTIFACT)
        if text is None:
            log.warning("run %s has no %s: long values not compared", run.run_id, CONFIG_ARTIFACT)
        else:
            full = flatten(yaml.safe_load(text) or {})
            params.update({k: _yaml_style(full[k]) for k in skipped if k in full})
    return params


def _ordered_metrics(names: set[str]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        for i, prefix in enumerate(KEY_ORDER):
            if name == prefix or (prefix.endswith("_") and name.startswith(prefix)):
                return (i, name)
        return (len(KEY_ORDER), name)

    return sorted(names, key=key)


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _not_comparable(run: RecordedRun, base: RecordedRun) -> list[str]:
    reasons = []
    if run.tag("dataset") != base.tag("dataset"):
        reasons.append(
            f"different datasets (replayml.dataset: {_clip(base.tag('dataset')) or '?'} in the "
            f"baseline, {_clip(run.tag('dataset')) or '?'} in the run)"
        )
    return reasons


def _no_effect(key: str, run: RecordedRun, base: RecordedRun) -> bool:
    """A model key that cannot change the model or its scores: the thread count (the trees are
    the same for any, by the determinism profile), or a LightGBM setting of two popularity
    baselines (they train nothing)."""
    if key == "model.num_threads":
        return True
    if key == "model.click_grade" and RANKER not in (
        run.tag("model.kind"),
        base.tag("model.kind"),
    ):
        return True  # only the ranker trains on grades
    baselines = run.tag("model.kind") == base.tag("model.kind") == "popularity"
    return baselines and key.startswith("model.") and key not in ("model.kind", "model.eval_at")


def _kinds_note(run: RecordedRun, base: RecordedRun) -> str:
    """What a review of two model kinds compares: the metrics both record from their scores
    (ranking metrics and AUC do not depend on the score's scale; log loss is the classifier's
    only), and with a ranker only the per-user-day ones (see `_pooled_unjudged`)."""
    kinds = base.tag("model.kind") or "?", run.tag("model.kind") or "?"
    if kinds[0] == kinds[1]:
        return ""
    tests = [{m for m in r.metrics if m.startswith("test_")} for r in (base, run)]
    only = sorted(tests[0] ^ tests[1])
    unjudged = f"; {', '.join(only)}, recorded by only one, is not judged" if only else ""
    pooled_both = sorted(m for m in _pooled_unjudged(run, base) if m not in only)
    if pooled_both:
        unjudged += (
            f"; {', '.join(pooled_both)}, pooled across user-days, is not judged ("
            f"{WITHIN_USER_DAY}): judge NDCG or recall"
        )
    return (
        f"Different model kinds ({kinds[0]} in the baseline, {kinds[1]} in the run): compared on "
        f"the test metrics both record from their scores on the same test rows{unjudged}"
    )


def _pooled_unjudged(run: RecordedRun, base: RecordedRun) -> list[str]:
    """The pooled test metrics of a ranker reviewed against another kind: its scores rank
    the rows of one user-day, and mean nothing across user-days."""
    kinds = {run.tag("model.kind"), base.tag("model.kind")}
    if RANKER not in kinds or len(kinds) == 1:
        return []
    names = {m for r in (run, base) for m in r.metrics if m.startswith("test_")}
    return sorted(m for m in names if pooled(m))


class NoBaselineError(ReplaymlError):
    """A review that must judge regressions (`--fail-on`) has no baseline to judge against."""


def _missing_alias(
    name: str,
    alias: str,
    aliases: dict[str, str],
    spec: StoreSpec,
    gone: DeletedHolder | None = None,
) -> str:
    """Why a regression gate cannot run against `models:/<name>@<alias>`, and the fix;
    `gone`: the alias's holder was deleted."""
    import difflib

    from replayml.registry import aliases_text

    if gone is not None:
        run = f", or compare with its run: --baseline {gone.run_id}" if gone.run_id else ""
        return (
            f"--fail-on cannot be judged: {gone.describe()}, and no version of {name} holds "
            f"@{alias} now in {spec.display_uri} ({aliases_text(name, aliases, yet=False)}). "
            f"Set it again with {gone.fixes()}{run}"
        )

    close = difflib.get_close_matches(alias, list(aliases), n=1)
    if close:
        fix = f"Did you mean --alias {close[0]}? "
    elif aliases:
        fix = "Pass the alias of the version to compare with as --alias. "
    else:
        fix = ""
    return (
        f"--fail-on cannot be judged: no version of {name} holds alias @{alias} in "
        f"{spec.display_uri} ({aliases_text(name, aliases)}). {fix}If this is the first model "
        f"of {name} under @{alias}, there is nothing to compare against yet: review it without "
        f"--fail-on, then set the alias with `replayml promote {name} VERSION --alias {alias}`"
    )


def _version_label(given: str, version: VersionRecord, base: RecordedRun, spec: StoreSpec) -> str:
    from replayml.tracking.registry_store import model_version_url

    url = model_version_url(spec, version.name, version.version, base.params.get(UI_PARAM))
    return f"`{given}` = {version.name} version {version.version} ([version page]({url}))"


def _resolve_baseline(
    reader: RunReader,
    baseline: str | None,
    name: str | None,
    alias: str,
    spec: StoreSpec,
    required: bool = False,
) -> tuple[RecordedRun | None, str, list[str]]:
    from replayml.registry import deleted_holder, resolve_run_ref
    from replayml.tracking.registry_store import RegistryStore

    if baseline is None and name:
        store = RegistryStore(spec)
        if not store.model_exists(name):  # the very first model of this name
            if required:
                import difflib

                names = [m[0] for m in store.models()]
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"Did you mean --name {close[0]}? " if close else ""
                raise NoBaselineError(
                    f"--fail-on cannot be judged: there is no registered model {name!r} in "
                    f"{spec.display_uri}. {hint}If this is the first model of {name}, there is "
                    f"nothing to compare against yet: review it without --fail-on, then "
                    f"`replayml register RUN_ID --name {name} --alias {alias}`"
                )
            return None, "", [f"No baseline: there is no registered model {name} yet"]
        aliases = store.aliases(name)
        if alias not in aliases:
            gone = deleted_holder(store, name, alias)
            if required:
                raise NoBaselineError(_missing_alias(name, alias, aliases, spec, gone))
            if gone is not None:
                return None, "", [f"No baseline: {gone.describe()}; no version holds it now"]
            return None, "", [f"No baseline: no version of {name} holds alias @{alias} yet"]
        baseline = f"models:/{name}@{alias}"
    if baseline is None:
        if required:
            raise NoBaselineError(
                "--fail-on cannot be judged without a baseline: pass --baseline RUN_ID (or "
                "models:/NAME@ALIAS), or --name NAME to compare with the version its --alias "
                "(default prod) points to"
            )
        return None, "", []
    ref = resolve_run_ref(baseline, spec=spec, option="--baseline")
    if ref.version is None:
        return _finished(reader, ref.run_id, "baseline", f"--baseline {baseline}"), "", []
    given = f"--baseline {ref.given} (the source run of version {ref.version.version})"
    run = _finished(reader, ref.run_id, "baseline", given)
    return run, _version_label(ref.given, ref.version, run, spec), []


def _finished(reader: RunReader, run_id: str, role: str, given: str = "") -> RecordedRun:
    try:
        run = reader.run(run_id, finished=False)
    except RunNotFoundError as exc:
        if not given:
            raise
        raise RunNotFoundError(
            f"the {role} run is not usable ({given}): {exc}. Pass the id of a finished replayml "
            f"run as --baseline RUN_ID, or a registered model as --baseline models:/NAME@ALIAS"
        ) from None
    if run.status != "FINISHED":
        raise ReplaymlError(
            f"the {role} run {run.run_id} in {reader.spec.display_uri} is {run.status}, not "
            f"FINISHED: its record is incomplete and cannot be reviewed ({run.url})"
        )
    return run


def review(
    run_id: str,
    baseline: str | None = None,
    *,
    spec: StoreSpec,
    name: str | None = None,
    alias: str = "prod",
    tolerance: float = 0.0,
    require_baseline: bool = False,
    resamples: int = RESAMPLES,
    project: Path | None = None,
) -> Review:
    """Review run `run_id` against `baseline`; either may be a run id or a registered version
    (`models:/NAME@ALIAS` or `models:/NAME/VERSION`: its source run).

    Without `baseline`, the holder of `models:/<name>@<alias>` when `name` is given, else no
    baseline (a summary of the run). With `require_baseline` (a regression gate), a baseline
    that cannot be found raises `NoBaselineError` instead. `resamples` bootstrap resamples
    give the intervals of the deltas (0: none). With `project` (a clone of the runs'
    project), the review also says whether others can replay each run: its commit on the git
    remote and its data version in the DVC remote.
    """
    from replayml.registry import resolve_run_ref
    from replayml.tracking.read import RunReader

    if 0 < resamples < MIN_RESAMPLES or resamples < 0:
        raise ReplaymlError(
            f"--bootstrap {resamples} is too few resamples for a 95% interval (its ends are "
            f"the 2.5th and 97.5th percentiles): use at least {MIN_RESAMPLES}, e.g. the default "
            f"{RESAMPLES}, or 0 for no intervals"
        )
    ref = resolve_run_ref(run_id, spec=spec, option="RUN")  # bad input before the store
    reader = RunReader(spec)
    run = _finished(reader, ref.run_id, "reviewed")
    run_label = "" if ref.version is None else _version_label(ref.given, ref.version, run, spec)
    base, label, notes = _resolve_baseline(
        reader, baseline, name, alias, spec, required=require_baseline
    )
    if base is not None and base.run_id == run.run_id:
        notes = [*notes, "The baseline is the run itself: every delta is zero by construction"]
    if (
        base is not None
        and test_set_difference(run, base)
        and run.tag("champion.run_id") == base.run_id
        and run.tag("champion.test_scores_hash")
    ):
        base = _as_champion(run, base)
        notes = [  # (the note below is the one a reader needs first)
            *notes,
            f"The baseline's model ({run.tag('champion.uri')}) was scored on this run's own "
            f"test rows when this run trained (tracking.champion): its test metrics here are "
            f"on those rows, not on its own test window, so the two are compared on the same "
            f"rows",
        ]
    unfixed: list[str] = []
    if base is not None and run.tag("metrics.ties") != base.tag("metrics.ties"):
        run, base, said, unfixed = _same_tie_rule(reader, run, base)
        notes = [*notes, said]
    scored = run.tag("champion.uri")
    if base is not None and scored and test_set_difference(run, base):
        notes = [
            *notes,
            f"This run scored {scored} on its own test rows (tracking.champion): review it "
            f"with --baseline {scored} to compare the two on the same rows",
        ]
    result = Review(
        run=run,
        baseline=base,
        baseline_label=label,
        run_label=run_label,
        tolerance=tolerance,
        notes=notes,
    )
    for recorded in (run, base):
        if recorded is not None and project is not None:
            from replayml.lineage.sharing import sharing_report

            result.sharing[recorded.run_id] = sharing_report(
                project,
                recorded.tag("code.commit"),
                recorded.tag("code.branch"),
                recorded.tag("data.dvc_hash"),
                recorded.tag("data.dvc_file"),
                on_remote=recorded.tag("code.on_remote"),
            )
        if recorded is not None and recorded.tag("code.dirty") == "true":
            diff = reader.text(recorded.run_id, DIFF_ARTIFACT)
            result.diffs[recorded.run_id] = diff_summary(diff) if diff else "no diff recorded"
    names = {m for m in run.metrics if m.startswith("test_")}
    if base is not None:
        names |= {m for m in base.metrics if m.startswith("test_")}
        result.not_comparable = _not_comparable(run, base)
        kinds = _kinds_note(run, base)
        if kinds:
            result.notes.append(kinds)
        result.unjudged = {m: WITHIN_USER_DAY for m in _pooled_unjudged(run, base)}
        result.unjudged.update({m: OTHER_TIE_RULE for m in unfixed})
        ours, theirs = _as_trained(_config(reader, run)), _as_trained(_config(reader, base))
        for key in sorted(set(ours) | set(theirs)):
            old, new = theirs.get(key, "(absent)"), ours.get(key, "(absent)")
            if old != new:
                change = ConfigChange(key, old, new)
                shapes = key.startswith(MODEL_SECTIONS) and not _no_effect(key, run, base)
                (result.config if shapes else result.other_config).append(change)
    result.metrics = [
        MetricRow(
            m,
            run.metrics.get(m),
            base.metrics.get(m) if base is not None else None,
            direction(m),
        )
        for m in _ordered_metrics(names)
    ]
    if base is not None and result.comparable and not test_set_difference(run, base):
        judged = [r for r in result.metrics if r.name not in result.unjudged]
        result.intervals, result.noise = _intervals(reader, run, base, judged, resamples)
    result.markdown = render(result)
    return result


OTHER_TIE_RULE = "n/a: recorded with another tie rule (no test scores to recompute it)"
_RANKING = ("test_ndcg_at_", "test_recall_at_")


def _same_tie_rule(
    reader: RunReader, run: RecordedRun, base: RecordedRun
) -> tuple[RecordedRun, RecordedRun, str, list[str]]:
    """Both runs' NDCG@k and recall@k under the current rule for tied scores (tied rows
    share their positions): a run recorded before it ranked ties by row order, so its values
    are recomputed from its recorded test scores. Returns the two runs, a note, and the
    metrics that could not be recomputed (not judged)."""
    import dataclasses

    from replayml.model.evaluate import ranking_metrics

    out, redone, unfixed = [], [], []
    for recorded in (run, base):
        names = [m for m in recorded.metrics if m.startswith(_RANKING)]
        if recorded.tag("metrics.ties") == "shared" or not names:
            out.append(recorded)
            continue
        scored, _ = _scores(reader, recorded)
        if scored is None:
            unfixed += names
            out.append(recorded)
            continue
        metrics = dict(recorded.metrics)
        for name in names:
            k = int(name.rsplit("_", 1)[1])
            ndcg, recall = ranking_metrics(scored.groups, scored.labels, scored.scores, k)
            metrics[name] = ndcg if name.startswith("test_ndcg") else recall
        redone.append(_short(recorded.run_id))
        out.append(dataclasses.replace(recorded, metrics=metrics))
    said = (
        f"NDCG and recall of run {', '.join(redone)} were recorded with the earlier rule for "
        f"tied scores (ties ranked by row order); they are recomputed here from its recorded "
        f"test scores with the current one (tied rows share their positions)"
        if redone
        else "One run recorded NDCG and recall with the earlier rule for tied scores and has "
        "no test scores to recompute them: they are not judged"
    )
    return out[0], out[1], said, sorted(set(unfixed))


#: on a baseline scored by the reviewed run (`_as_champion`): where its test scores are
SCORES_SOURCE_TAG = "review.scores_source"


def _as_champion(run: RecordedRun, base: RecordedRun) -> RecordedRun:
    """The baseline as `run` scored it on its own test rows (`tracking.champion`): its test
    metrics, test rows and test scores are those `run` recorded for it."""
    import dataclasses

    from replayml.champion import METRIC_PREFIX, SCORES_ARTIFACT

    metrics = {k: v for k, v in base.metrics.items() if not k.startswith("test_")}
    metrics.update(
        {
            "test_" + k.removeprefix(METRIC_PREFIX): v
            for k, v in run.metrics.items()
            if k.startswith(METRIC_PREFIX)
        }
    )
    tags = dict(base.tags)
    for key in ("rows.test", "test_rows_hash", "dates.test_start", "dates.test_end"):
        tags[TAG_PREFIX + key] = run.tag(key)
    tags[TAG_PREFIX + "test_scores_hash"] = run.tag("champion.test_scores_hash")
    tags[TAG_PREFIX + "metrics.ties"] = run.tag("metrics.ties")  # computed by `run`
    tags[TAG_PREFIX + SCORES_SOURCE_TAG] = f"{run.run_id} {SCORES_ARTIFACT}"
    return dataclasses.replace(base, metrics=metrics, tags=tags)


def _scores(reader: RunReader, run: RecordedRun) -> tuple[Scored | None, str]:
    """The run's recorded test scores, or None and why not (the review goes on without
    intervals: the scores are an optional part of the record)."""
    from replayml.model.bootstrap import Scored
    from replayml.model.evaluate import test_scores_hash

    source, artifact = run.run_id, TEST_SCORES_ARTIFACT
    if run.tag(SCORES_SOURCE_TAG):  # a baseline the reviewed run scored: its files say
        source, artifact = run.tag(SCORES_SOURCE_TAG).split(" ", 1)
    short = _short(source)
    try:
        table = reader.table(source, artifact)
        if table is None:
            return None, f"run {short} records no test scores ({artifact})"
        scored = Scored(
            table["label"].to_numpy("int64"),
            table["group"].to_numpy("int64"),
            table["score"].to_numpy("float64"),
        )
    except ReplaymlError:
        raise  # the store itself is unusable: said like every other store error
    except Exception as exc:  # a damaged file, or columns that are not the recorded ones
        return None, (
            f"the test scores recorded for run {short} ({artifact}) cannot be read: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        )
    recorded = run.tag("test_scores_hash")
    if recorded != test_scores_hash(scored.groups, scored.labels, scored.scores):
        return None, (
            f"the test scores recorded for run {short} do not hash to its test_scores_hash "
            f"tag (the artifact was changed after the run)"
            if artifact == TEST_SCORES_ARTIFACT
            else f"the champion's test scores recorded by run {short} ({artifact}) do not hash "
            f"to its champion.test_scores_hash tag (the artifact was changed after the run)"
            if recorded
            else f"run {short} records no test_scores_hash to check its test scores against"
        )
    return scored, ""


def _intervals(
    reader: RunReader, run: RecordedRun, base: RecordedRun, rows: list[MetricRow], resamples: int
) -> tuple[dict[str, Interval], str]:
    """95% intervals of the deltas from a paired bootstrap, and how they were made (or why
    there are none)."""
    from replayml.model.bootstrap import INTERVAL, paired_intervals

    if resamples <= 0:
        return {}, "no intervals: the bootstrap was turned off (--bootstrap 0)"
    ours, why = _scores(reader, run)
    theirs, why_base = _scores(reader, base) if ours is not None else (None, "")
    if ours is None or theirs is None:
        return {}, f"no intervals: {why or why_base}"
    names = [
        r.name.removeprefix("test_")
        for r in rows
        if r.run is not None and r.baseline is not None and r.name.startswith("test_")
    ]
    try:
        found = paired_intervals(ours, theirs, names, resamples=resamples)
    except ValueError as exc:
        return {}, f"no intervals: {exc}"
    if not found:
        return {}, "no intervals: no metric is defined on enough of the resampled test sets"
    user_days = len(set(ours.groups.tolist()))
    how = (
        f"{INTERVAL[1] - INTERVAL[0]:g}% intervals of each delta from a paired bootstrap: the "
        f"{user_days:,} user-days of the test window resampled {resamples:,} times, both "
        f"runs' recorded test scores re-scored on each; an interval that contains 0 means the "
        f"difference is within the noise of this test set. They cover the test sample only, "
        f"not training randomness: two runs that differ only in `model.seed` can differ beyond "
        f"them (compare several seeds for that), and of several metrics one may fall outside "
        f"by chance"
    )
    return {f"test_{n}": i for n, i in found.items()}, how


# --------------------------------------------------------------------------- Markdown


def _cell(text: object) -> str:
    s = str(text).replace("\n", " ").replace("|", "\\|")
    if len(s) > MAX_CELL:
        s = s[: MAX_CELL - 20] + f"… ({len(s)} chars)"
    return s


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.5f}" if abs(value) >= 1e-4 or value == 0 else f"{value:.3e}"


def _delta(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    return f"{value:+.5f}" if abs(value) >= 1e-4 else f"{value:+.3e}"


def _rel(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2%}"


def _ci(interval: Interval | None) -> str:
    return "—" if interval is None else f"[{_delta(interval.low)}, {_delta(interval.high)}]"


def _short(run_id: str) -> str:
    return run_id[:8]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
    ]


def _window(run: RecordedRun, name: str) -> str:
    start, end = run.tag(f"dates.{name}_start"), run.tag(f"dates.{name}_end")
    return f"{start} → {end}" if start or end else "—"


def _rows(run: RecordedRun) -> str:
    return " / ".join(run.tag(f"rows.{w}") or "?" for w in WINDOWS)


def diff_summary(diff: str) -> str:
    """`2 files, +3 −1` for a unified git diff."""
    lines = diff.splitlines()
    files = sum(1 for line in lines if line.startswith("diff --git "))
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return f"{files} file{'s' if files != 1 else ''}, +{added} −{removed}"


def _dirty_cell(r: Review) -> Callable[[RecordedRun], str]:
    def cell(run: RecordedRun) -> str:
        dirty = {"true": "yes", "false": "no"}.get(run.tag("code.dirty"), "?")
        if run.run_id in r.diffs:
            # the UI's route that opens one artifact of the run
            link = f"{run.url}/artifactPath/{DIFF_ARTIFACT}"
            return f"{dirty}: {r.diffs[run.run_id]} ([{DIFF_ARTIFACT}]({link}))"
        return dirty

    return cell


def _verdict(run: RecordedRun) -> str:
    verdict = run.tag("replay.verdict")
    if not verdict:
        return "not replayed"
    replay_id = run.tag("replay.run_id")
    if not replay_id:
        return verdict
    # replays are logged to the run's experiment: link it on this store's UI address
    url = f"{run.url.rsplit('/runs/', 1)[0]}/runs/{replay_id}"
    return f"{verdict} ([replay]({url}))"


def _replayable(run: RecordedRun) -> str:
    if run.tag("replayable") == "true":
        return "yes"
    return f"no: {run.tag('not_replayable_reasons') or '?'}"


def _shared_cell(r: Review) -> Callable[[RecordedRun], str]:
    def cell(run: RecordedRun) -> str:
        gaps, unknown = r.sharing.get(run.run_id, ([], []))
        if gaps:
            return "no: " + "; ".join(g.split(":", 1)[0] for g in gaps)
        if unknown:
            return "not checked: " + "; ".join(unknown)
        return "yes (commit on the git remote, data in the DVC remote)"

    return cell


def _count(rows: str) -> str:
    return f"{int(rows):,}" if rows.isdigit() else (rows or "?")


def test_set_difference(run: RecordedRun, base: RecordedRun) -> str:
    """How the test sets the two runs were scored on differ ("" when they have the same rows).

    The recorded test rows decide (their hash, else their count): a test matrix whose slice
    hash differs with the same rows
    usually has other feature values (another training window or feature set), which the
    comparison is about, while other rows (another window or preprocessing) make the metrics
    measure something else.
    """
    rows, base_rows = run.tag("rows.test"), base.tag("rows.test")
    hashes = run.tag("test_rows_hash"), base.tag("test_rows_hash")
    if rows == base_rows and (hashes[0] == hashes[1] or not all(hashes)):  # (older runs: none)
        return ""
    days = _window(run, "test"), _window(base, "test")
    if days[0] != days[1] and all(days):
        return (
            f"the test windows differ ({days[1]} in the baseline, {days[0]} in the run): a "
            f"retrain on newer data tests on a newer day, so compare it with the model it may "
            f"replace on its own test rows by training it with tracking.champion=models:/NAME"
            f"@ALIAS (that model scored beside it), then review against that version"
        )
    if rows == base_rows:
        return (
            f"the test sets differ: {_count(rows)} rows in both, but other rows (test_rows_hash)"
        )
    return (
        f"the test sets differ: {_count(base_rows)} rows in the baseline, {_count(rows)} in the "
        f"run (rows.test)"
    )


def same_data(run: RecordedRun, base: RecordedRun) -> tuple[bool, str]:
    """Whether both runs read the same data (DVC version, date windows and test set), and
    why not."""
    why = []
    if run.tag("data.dvc_hash") != base.tag("data.dvc_hash"):
        why.append("the DVC data versions differ")
    if run.tag("dataset") != base.tag("dataset"):
        why.append("the datasets differ")
    windows = [w for w in WINDOWS if _window(run, w) != _window(base, w)]
    if windows:
        why.append(f"the {', '.join(windows)} date windows differ")
    test_set = test_set_difference(run, base)
    if test_set:
        why.append(test_set)
    if why:
        return False, "; ".join(why)
    slices = [w for w in WINDOWS if run.tag(f"slice_hash.{w}") != base.tag(f"slice_hash.{w}")]
    if slices:
        return True, (
            f"same DVC version, date windows and test rows; the {', '.join(slices)} feature "
            f"matrices differ (slice_hash: preprocessing or features changed)"
        )
    return True, "same DVC version, date windows, test rows and feature matrices"


def render(r: Review) -> str:
    """The review as Markdown."""
    run, base = r.run, r.baseline
    out = [f"# Review of run {_short(run.run_id)}", ""]
    if base is not None and r.not_comparable:
        out += [
            f"> **Not comparable:** the baseline {_short(base.run_id)} is not a like-for-like "
            f"comparison: {'; '.join(r.not_comparable)}. The deltas below are shown for "
            f"information only and no regression is judged.",
            "",
        ]
    run_label = f" — {r.run_label}" if r.run_label else ""
    out.append(f"- Run: [{run.run_id}]({run.url}) ({run.experiment_name}){run_label}")
    if base is not None:
        label = f" — {r.baseline_label}" if r.baseline_label else ""
        out.append(f"- Baseline: [{base.run_id}]({base.url}) ({base.experiment_name}){label}")
    for note in r.notes:
        out.append(f"- {note}")
    for recorded, role in ((run, "run"), (base, "baseline")):
        gaps = r.sharing.get(recorded.run_id, ([], []))[0] if recorded is not None else []
        if recorded is not None and gaps:
            out.append(f"- **Others cannot replay the {role} yet:** {'; '.join(gaps)}")
        if recorded is not None and recorded.run_id in r.diffs:
            out.append(
                f"- **Uncommitted changes:** the {role} was trained from a dirty tree "
                f"({r.diffs[recorded.run_id]}); its diff is that run's `{DIFF_ARTIFACT}` "
                f"artifact"
            )
    if base is None and not r.notes:
        out.append("- No baseline: a summary of the run (pass --baseline RUN_ID or --name NAME)")
    warned = [(role, x, _warnings(x)) for x, role in ((run, "run"), (base, "baseline")) if x]
    warned = [(role, x, said) for role, x, said in warned if said]
    for role, _, said in warned:
        out.append(
            f"- **The {role} trained with {len(said)} warning(s)** (see Warnings below): "
            f"{_cell(_clip(said[0], 160))}"
        )
    out.append("")

    out += ["## Metrics", ""]
    if base is None:
        out += _table(["metric", "run"], [[m.name, _num(m.run)] for m in r.metrics])
    else:
        rows = []
        other_rows = bool(test_set_difference(run, base))
        for m in r.metrics:
            status = m.status(r.tolerance) if r.comparable else "n/a (not comparable)"
            if r.comparable and other_rows:  # the deltas are shown; no verdict is judged
                status = "n/a (other test rows)"
            elif r.comparable and m.name in r.unjudged:
                status = f"n/a: {r.unjudged[m.name]}"
            if status in ("regressed", "improved") and r.within_noise(m.name):
                status += " (within noise)"
            elif status == "regressed":
                status = "**regressed**"
            better = {"max": "higher", "min": "lower"}.get(m.better or "", "?")
            row = [m.name, _num(m.run), _num(m.baseline), _delta(m.delta), _rel(m.relative),
                   better, status]  # fmt: skip
            if r.intervals:
                row.append(_ci(r.intervals.get(m.name)))
            rows.append(row)
        head = ["metric", "run", "baseline", "delta", "rel. delta", "better", "verdict"]
        out += _table(head + (["95% interval of delta"] if r.intervals else []), rows)
        if r.noise:
            out += ["", f"Noise: {r.noise}."]
        test_set = test_set_difference(run, base)
        if test_set:
            out += [
                "",
                f"> **Different test sets:** {test_set}. The metrics were measured on different "
                f"test data, so the deltas and verdicts do not compare like with like.",
            ]
        if r.comparable and not test_set:
            regressed = [n + (" (within noise)" * r.within_noise(n)) for n in r.regressions]
            out += ["", f"Regressions: {', '.join(regressed) if regressed else 'none'}"]
    out.append("")

    if base is not None:
        out += ["## Config", ""]
        if r.config:
            out += _table(
                ["key", "baseline", "run"], [[c.key, c.baseline, c.run] for c in r.config]
            )
        else:
            out.append("No difference in the data, dates, preprocessing, features or model.")
        if r.other_config:
            keys = ", ".join(f"`{c.key}`" for c in r.other_config)
            out += ["", f"Also differ (no effect on the model): {keys}"]
        out.append("")

    out += ["## Data", "", "Date windows are UTC days, first to last day included.", ""]
    fields = [
        ("dataset", lambda x: x.tag("dataset")),
        ("DVC hash", lambda x: x.tag("data.dvc_hash")),
        *((f"{w} window", lambda x, w=w: _window(x, w)) for w in WINDOWS),
        ("rows train / valid / test", _rows),
    ]
    if base is None:
        out += _table(["", "run"], [[n, f(run)] for n, f in fields])
    else:
        out += _table(["", "baseline", "run"], [[n, f(base), f(run)] for n, f in fields])
        same, why = same_data(run, base)
        out += ["", f"Same data: **{'yes' if same else 'no'}** ({why})"]
    out.append("")

    out += ["## Code", ""]
    code = [
        ("commit", lambda x: f"{x.tag('code.commit')[:12]} ({x.tag('code.branch')})"),
        ("dirty", _dirty_cell(r)),
        ("replayable", _replayable),
        ("replay verdict", _verdict),
    ]
    if r.sharing:
        code.insert(3, ("others can replay", _shared_cell(r)))
    if base is None:
        out += _table(["", "run"], [[n, f(run)] for n, f in code])
    else:
        out += _table(["", "baseline", "run"], [[n, f(base), f(run)] for n, f in code])
        if run.tag("code.commit") == base.tag("code.commit"):
            out += ["", "Same commit."]
    out.append("")
    if warned:
        out += ["## Warnings", "", "What replayml warned about while the run was trained.", ""]
        for role, x, said in warned:
            out.append(f"{role.capitalize()} {_short(x.run_id)}:")
            out.append("")
            out += [f"- {_clip(w, 600)}" for w in said]
            out.append("")
    return "\n".join(out)


def _warnings(run: RecordedRun) -> list[str]:
    """The warnings the run recorded as it trained (`replayml.warnings`)."""
    text = run.tag("warnings")
    return [line for line in text.splitlines() if line.strip()] if text else []
