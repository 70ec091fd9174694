"""Sweep parent runs: create one before jobs fan out, summarise its children at the end."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from replayml.tracking.run import TAG_PREFIX, RunHandle, process_tags
from replayml.tracking.store import StoreSpec, explain, open_experiment, run_url

log = logging.getLogger(__name__)

SWEEP_TAG = TAG_PREFIX + "sweep_id"


def job_key(overrides: list[str]) -> str:
    """One job of a sweep, whatever the order its overrides were written in."""
    return " ".join(sorted(overrides))


@dataclass(frozen=True)
class ChildRow:
    """One job of a sweep as the store holds it."""

    run_id: str
    status: str
    overrides: list[str]
    metrics: dict[str, float]
    url: str
    #: the test set the child was scored on: dataset, data version and test window
    test_set: str = ""
    #: why the child cannot be replayed exactly ("" when it can)
    not_replayable: str = ""


@dataclass
class SweepSummary:
    """All children of a sweep, sorted by the objective (best first), and what never ran."""

    sweep_id: str
    parent_run_id: str
    parent_url: str
    objective: str
    direction: str
    children: list[ChildRow] = field(default_factory=list)
    missing: list[list[str]] = field(default_factory=list)
    #: why a job that never ran stopped (its error), by `job_key`
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[ChildRow]:
        """The children that did not finish, except those stopped by the user (`killed`)."""
        return [c for c in self.children if c.status not in ("FINISHED", "KILLED")]

    @property
    def killed(self) -> list[ChildRow]:
        """The children stopped from outside (Ctrl-C, a kill) while under way."""
        return [c for c in self.children if c.status == "KILLED"]

    @property
    def scored(self) -> list[ChildRow]:
        return [c for c in self.children if c.status == "FINISHED" and self.objective in c.metrics]

    @property
    def test_sets(self) -> list[str]:
        """The distinct test sets the scored children were scored on (one: comparable)."""
        return sorted({c.test_set for c in self.scored})

    @property
    def best(self) -> ChildRow | None:
        """The best scored child; None when they were scored on different test sets."""
        done = self.scored
        return done[0] if done and len(self.test_sets) == 1 else None

    @property
    def why_no_best(self) -> str:
        if self.best is not None:
            return ""
        if not self.scored:
            return f"no finished child has {self.objective}"
        w = "validation" if _window(self.objective) == "valid" else "test"
        return (
            f"the children were scored on {len(self.test_sets)} different {w} sets (other "
            f"{w} rows: the dataset, data version, {w} window or the rows preprocessing "
            f"kept differ), so their {self.objective} values do not compare across them"
        )


def start_parent(
    spec: StoreSpec, sweep_id: str, overrides: list[str], n_jobs: int
) -> tuple[RunHandle, str]:
    """Create the sweep's parent run (also initialising a fresh store once, before fan-out).

    A sweep id the store already holds (a fixed `hydra.sweep.dir` used again) gets a
    suffix, `-2`, `-3`, ...: `replayml sweep ID` names one sweep. Returns the parent's
    handle and the sweep id it got."""
    client, experiment_id = open_experiment(spec)
    try:
        taken = {
            r.data.tags.get(SWEEP_TAG, "")
            for r in client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{SWEEP_TAG}` LIKE '{sweep_id}%' "
                "and tags.`replayml.sweep.role` = 'parent'",
                max_results=5000,
            )
        }
    except Exception as exc:
        raise explain(exc, spec) from exc
    base, n = sweep_id, 1
    while sweep_id in taken:
        n += 1
        sweep_id = f"{base}-{n}"
    tags = {
        SWEEP_TAG: sweep_id,
        TAG_PREFIX + "sweep.role": "parent",
        TAG_PREFIX + "sweep.overrides": json.dumps(overrides),
        TAG_PREFIX + "sweep.n_jobs": str(n_jobs),
        **process_tags(),  # `replayml doctor` finds a dead sweep by its pid, like any run
    }
    try:
        run = client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", tags=tags)
    except Exception as exc:
        raise explain(exc, spec) from exc
    return RunHandle(client, spec, experiment_id, run.info.run_id), sweep_id


def collect(
    spec: StoreSpec,
    parent_run_id: str,
    objective: str,
    direction: str,
    expected: list[list[str]] | None = None,
    errors: dict[str, str] | None = None,
) -> SweepSummary:
    """Read a sweep's parent and children from the store, best child first; `errors` says
    why jobs that never ran stopped (by `job_key`)."""
    client, _ = open_experiment(spec)
    parent = client.get_run(parent_run_id)
    exp_id = parent.info.experiment_id
    runs = client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000
    )
    children = [
        ChildRow(
            run_id=r.info.run_id,
            status=r.info.status,
            overrides=json.loads(r.data.tags.get(TAG_PREFIX + "overrides", "[]")),
            metrics=dict(r.data.metrics),
            url=run_url(spec, exp_id, r.info.run_id, r.data.params.get("tracking.ui_url")),
            test_set=_scored_set(r.data.tags, objective),
            not_replayable=(
                r.data.tags.get(TAG_PREFIX + "not_replayable_reasons") or "not replayable"
                if r.data.tags.get(TAG_PREFIX + "replayable") == "false"
                else ""
            ),
        )
        for r in runs
    ]
    sign = -1.0 if direction == "max" else 1.0

    def key(c: ChildRow) -> tuple[int, float, str]:
        value = c.metrics.get(objective, math.nan)
        ok = c.status == "FINISHED" and not math.isnan(value)
        return (0 if ok else 1, sign * value if ok else 0.0, " ".join(c.overrides))

    children.sort(key=key)
    seen = {job_key(c.overrides) for c in children}
    missing = [o for o in (expected or []) if job_key(o) not in seen]
    why = {job_key(o): (errors or {})[job_key(o)] for o in missing if job_key(o) in (errors or {})}
    return SweepSummary(
        sweep_id=parent.data.tags.get(SWEEP_TAG, ""),
        parent_run_id=parent_run_id,
        parent_url=run_url(spec, exp_id, parent_run_id),
        objective=objective,
        direction=direction,
        children=children,
        missing=missing,
        errors=why,
    )


def _window(objective: str) -> str:
    """The window an objective is computed on: "valid" for `valid_best_*`, else "test"."""
    return "valid" if objective.startswith("valid_") else "test"


def _scored_set(tags: dict[str, str], objective: str) -> str:
    """The rows a child's `objective` was computed on: children compare only within one."""

    def tag(key: str) -> str:
        return tags.get(TAG_PREFIX + key, "?")

    w = _window(objective)
    rows = tags.get(TAG_PREFIX + f"{w}_rows_hash")
    span = f"{tag(f'dates.{w}_start')}..{tag(f'dates.{w}_end')}"
    if rows:  # the rows themselves (other preprocessing or data files change them)
        return f"{tag('dataset')} {span} {rows[:8]}"
    return f"{tag('dataset')}@{tag('data.dvc_hash')[:8]} {span}"


def summary_markdown(s: SweepSummary, metrics: list[str]) -> str:
    """The sweep's table: one row per child, best first, then the jobs that never ran; the
    objective is always one of its columns."""
    metrics = [*metrics, *([s.objective] if s.objective not in metrics else [])]
    mixed = len(s.test_sets) > 1
    scored_on = "validation set" if _window(s.objective) == "valid" else "test set"
    head = ["#", "status", "overrides", *metrics, *([scored_on] if mixed else []), "run"]
    lines = [
        f"# Sweep {s.sweep_id}",
        "",
        f"Parent run: {s.parent_url}  ",
        f"Objective: {s.objective} ({s.direction}); children: {len(s.children)}, "
        f"failed: {len(s.failed)}, "
        + (f"killed: {len(s.killed)}, " if s.killed else "")
        + f"never ran: {len(s.missing)}",
        "",
    ]
    if mixed:
        lines += [f"No best child: {s.why_no_best}; compare rows of one {scored_on}.", ""]
    if s.best is not None and s.best.not_replayable:
        lines += [
            f"The best child is not replayable ({s.best.not_replayable}): train it again "
            f"before registering it.",
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, c in enumerate(s.children, 1):
        vals = [f"{c.metrics[m]:.5f}" if m in c.metrics else "" for m in metrics]
        vals += [f"`{c.test_set}`"] if mixed else []
        over = " ".join(c.overrides) or "(defaults)"
        lines.append(f"| {i} | {c.status} | `{over}` | " + " | ".join(vals) + f" | {c.url} |")
    for o in s.missing:
        blanks = " | ".join("" for _ in head[3:-1])
        why = s.errors.get(job_key(o), "")
        why = why if len(why) <= 300 else why[:299] + "…"
        why = why.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| - | NEVER RAN | `{' '.join(o)}` | {blanks} | {why} |")
    return "\n".join(lines) + "\n"


def finish_parent(handle: RunHandle, s: SweepSummary, metrics: list[str], aborted: bool) -> str:
    """Log the summary table, the best child and the sweep's status on the parent run."""
    table = summary_markdown(s, metrics)
    handle.log_text(table, "sweep_summary.md")
    handle.log_text(
        json.dumps(
            [c.__dict__ for c in s.children]
            + [{"overrides": o, "status": "NEVER_RAN", "error": s.errors.get(job_key(o), "")}
               for o in s.missing],
            indent=2,
        ),
        "sweep_summary.json",
    )  # fmt: skip
    tags = {
        TAG_PREFIX + "sweep.children": str(len(s.children)),
        TAG_PREFIX + "sweep.failed": str(len(s.failed)),
        TAG_PREFIX + "sweep.killed": str(len(s.killed)),
        TAG_PREFIX + "sweep.never_ran": json.dumps(s.missing),
    }
    best = s.best
    if len(s.test_sets) > 1:
        tags[TAG_PREFIX + "sweep.test_sets"] = json.dumps(s.test_sets)
    if best is not None:
        tags[TAG_PREFIX + "sweep.best_run_id"] = best.run_id
        tags[TAG_PREFIX + "sweep.best_overrides"] = " ".join(best.overrides)
        handle.log_metrics({f"best_{s.objective}": best.metrics[s.objective]})
    handle.set_tags(tags)
    status = "FAILED" if (s.failed or s.killed or s.missing or aborted) else "FINISHED"
    handle.client.set_terminated(handle.run_id, status)
    return status


def find_parent(spec: StoreSpec, sweep: str) -> str:
    """The parent run id of a sweep given its sweep id or its parent run id."""
    from replayml.errors import RunNotFoundError

    client, exp_id = open_experiment(spec)
    try:
        run: Any = client.get_run(sweep)
        if run.data.tags.get(TAG_PREFIX + "sweep.role") == "parent":
            return sweep
    except Exception:  # not a run id: try it as a sweep id below
        log.debug("%s is not a run id", sweep)
    exps = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(
        exps,
        filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`replayml.sweep.role` = 'parent'",
    )
    if not found:
        recent = client.search_runs(
            exps,
            filter_string="tags.`replayml.sweep.role` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=5,
        )
        ids = ", ".join(r.data.tags.get(SWEEP_TAG, r.info.run_id) for r in recent)
        raise RunNotFoundError(
            f"no sweep {sweep!r} (sweep id or parent run id) in {spec.display_uri}; "
            + (f"the latest sweeps there: {ids}" if ids else "it has no sweeps")
            + " (or check --tracking-uri)"
        )
    return str(found[0].info.run_id)
