"""Hydra multirun sweeps as one thing in MLflow: a parent run, children with full lineage.

`SweepCallback` (configured in conf/config.yaml) creates the parent run before jobs fan out
(which also initialises a fresh store once), tells each job its parent through the environment
and, at the end, logs a summary table of every child, the best child by the objective and the
overrides that never ran. A sweep with a failed or missing job ends FAILED.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

PARENT_ENV = "REPLAYML_PARENT_RUN_ID"
SWEEP_ENV = "REPLAYML_SWEEP_ID"
JOBS_ENV = "REPLAYML_PARALLEL_JOBS"
OBJECTIVE_TAG = "replayml.sweep.objective"
DIRECTION_TAG = "replayml.sweep.objective_direction"
NEVER_RAN_TAG = "replayml.sweep.never_ran"
SUMMARY_JSON = "sweep_summary.json"
#: a job that stopped before its run existed leaves its overrides and error here, in its folder
JOB_ERROR_FILE = "replayml_job_error.json"
#: seconds a stopped sweep's workers get to mark their runs KILLED before they are killed
WORKER_GRACE = 15.0
SUMMARY_METRICS = ["test_auc", "test_avg_precision", "test_logloss", "test_ndcg_at_10",
                   "test_recall_at_10", "baseline_auc"]  # fmt: skip


#: the sweeper whose jobs `expand_sweep` can list before they run (Hydra's default)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def expand_sweep(
    task_overrides: list[str], sweeper_params: dict[str, Any] | None = None
) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper will run them: its `params` (a preset's
    `hydra.sweeper.params`) first, then the command line's. `glob()` matches the options of
    the group in this Hydra run's config search path (`--config-dir` included).

    Raises `ConfigError` naming the override when the sweep cannot be expanded (a sweep the
    basic sweeper does not run, such as `interval()`; a glob that matches nothing; a parse
    error)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from replayml.errors import ConfigError

    gh = GlobalHydra.instance()
    loader = gh.config_loader() if gh.is_initialized() else None
    arguments = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(task_overrides)
    try:
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    except Exception as exc:  # Hydra's parse errors, and a glob() it cannot list
        said = str(exc).split("See https://")[0].strip().replace("\n", " ")
        raise ConfigError(f"the sweep cannot be expanded: {said}") from None
    for override in parsed:
        typed = override.input_line or f"{override.get_key_element()}=..."
        if override.is_sweep_override() and not override.is_discrete_sweep():
            kind = override.value_type.name.lower().removesuffix("_sweep")  # type: ignore[union-attr]
            raise ConfigError(
                f"`{typed}`: Hydra's basic sweeper cannot run {kind}() (it gives no list of "
                f"values); give the values (`{override.get_key_element()}=a,b,c`, or "
                f"range(start,stop,step)), or use a sweeper plugin that samples it (Optuna)"
            )
        if override.is_discrete_sweep() and not list(override.sweep_string_iterator()):
            is_glob = getattr(override.value_type, "name", "") == "GLOB_CHOICE_SWEEP"
            why = (
                f": the glob matches no option of the config group `{override.get_key_element()}`"
            )
            raise ConfigError(f"`{typed}` gives no value to sweep over{why if is_glob else ''}")
    batches = BasicSweeper.split_arguments(parsed, None)
    # the sweeper backslash-escapes special characters; jobs see the values as typed
    return [[unescape_override(o) for o in job] for batch in batches for job in batch]


def unescape_override(override: str) -> str:
    """An override as the user typed it (the sweeper backslash-escapes special characters)."""
    return re.sub(r"\\(.)", r"\1", override)


def parallel_jobs(config: DictConfig) -> int:
    """How many jobs the configured launcher runs at once."""
    launcher = config.hydra.launcher
    n = launcher.get("n_jobs", 1) if "n_jobs" in launcher else 1
    cores = os.cpu_count() or 1
    return cores if n in (None, -1) else max(1, min(int(n), cores))


def recorded_metrics(eval_at: int, kind: str) -> list[str]:
    """The metrics a run of model `kind` records (see `model.evaluate.evaluate`): log loss for
    probabilities (the classifier's and the popularity baseline's), never for the ranker's
    scores; validation metrics only for what LightGBM trained."""
    ranking = ["auc", "avg_precision", f"ndcg_at_{eval_at}", f"recall_at_{eval_at}"]
    with_logloss = ranking[:2] + ["logloss"] + ranking[2:]
    test = ranking if kind == "lgbm_ranker" else with_logloss
    # the validation metrics at the best iteration, of the models LightGBM trained
    valid = {"lgbm": with_logloss, "lgbm_ranker": ranking}.get(kind, [])
    return (
        [f"test_{m}" for m in test]
        + [f"valid_best_{m}" for m in valid]
        + [f"baseline_{m}" for m in with_logloss]
    )


def check_objective(objective: str, eval_at: int, kind: str = "lgbm", job: str = "") -> None:
    """Refuse an objective a run of this model kind does not record (a typo, or log loss of a
    ranker, would rank nothing), naming the ones it does."""
    from replayml.errors import ConfigError

    known = recorded_metrics(eval_at, kind)
    if objective in known:
        return
    if objective in {m for k in ("lgbm", "lgbm_ranker", "popularity")
                     for m in recorded_metrics(eval_at, k)}:  # fmt: skip
        raise ConfigError(
            f"tracking.objective={objective!r} is not recorded by model={kind} runs"
            f"{' (sweep job `' + job + '`)' if job else ''}: they record {', '.join(known)}; "
            f"pick an objective every job of the sweep records"
        )
    raise ConfigError(
        f"tracking.objective={objective!r} is not a metric runs record; use one of "
        f"{', '.join(known)}{' (sweep job `' + job + '`)' if job else ''}"
    )


#: override keys that can change a job's model or objective (presets can set both)
_JOB_CHECK_GROUPS = (
    "model", "tracking", "experiment", "data", "dates", "preprocessing", "features",
)  # fmt: skip


def _check_data(cfg: Any, root: Path, verified: set[tuple[str, ...]]) -> None:
    """The checks a job of `cfg` makes on its data before its run exists, once per slice."""
    from replayml.config.resolve import resolve_dates
    from replayml.pipeline import check_config, history_start, verify_data

    first, last = check_config(cfg, root)
    windows = resolve_dates(cfg.dates, first, last)
    start = history_start(cfg, windows, first)
    key = (repr(cfg.data), start.isoformat(), windows.test.end.isoformat())
    if key not in verified:
        verify_data(cfg, root, windows, start)
        verified.add(key)


def check_jobs(jobs: list[list[str]], config_name: str | None, root: Path | None = None) -> None:
    """Compose each distinct config of the sweep's jobs and check it, so a value no job could
    train with or rank by stops the sweep before its parent run or any job exists. The first
    job is composed with all its overrides: every job sets the same keys, so a mistyped key
    anywhere (`model.num_leavs=7,15`) stops the sweep too. With the project's `root`, each
    distinct data slice is checked too (dates inside the data, the files of the recorded
    version present and unchanged): edited data stops the sweep, not each of its jobs. A
    sweep mixing the ranker with another kind must rank its jobs by a per-user-day metric."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    from replayml.config.resolve import to_run_config
    from replayml.errors import ConfigError, ReplaymlError
    from replayml.pipeline import check_model
    from replayml.review import RANKER, pooled

    if not GlobalHydra.instance().is_initialized() or not config_name:
        return
    checked: set[tuple[str, ...]] = set()
    verified: set[tuple[str, ...]] = set()
    kinds: dict[str, int] = {}  # model kind -> its eval_at
    objectives: set[str] = set()
    for i, job in enumerate(jobs):
        key = tuple(
            o
            for o in job
            if i == 0 or o.lstrip("+~").split("=")[0].split(".")[0] in _JOB_CHECK_GROUPS
        )
        if key in checked:
            continue
        checked.add(key)
        try:
            cfg = to_run_config(compose(config_name=config_name, overrides=list(key)))
        except ReplaymlError:
            raise
        except Exception as exc:  # Hydra's own composition errors (an unknown option, a type)
            said = str(exc).split("Config search path")[0].strip().replace("\n\t", " ")
            raise ConfigError(f"sweep job `{' '.join(job)}`: {said}") from None
        try:
            check_model(cfg.model)
            if root is not None:
                _check_data(cfg, root, verified)
        except ReplaymlError as exc:
            raise type(exc)(f"sweep job `{' '.join(job)}`: {exc}") from None
        check_objective(
            cfg.tracking.objective, cfg.model.eval_at, cfg.model.kind.value, " ".join(key)
        )
        kinds.setdefault(cfg.model.kind.value, cfg.model.eval_at)
        objectives.add(cfg.tracking.objective)
    # the ranker's scores compare only within a user-day: a metric pooled across user-days
    # favours one kind by construction
    pooled_objectives = sorted(o for o in objectives if pooled(o))
    if RANKER in kinds and len(kinds) > 1 and pooled_objectives:
        others = ", ".join(f"model={k}" for k in sorted(kinds) if k != RANKER)
        k = kinds[RANKER]
        # the popularity baseline trains nothing, so it records no validation metric
        fix = (
            f"tracking.objective=test_ndcg_at_{k}"
            if "popularity" in kinds
            else f"tracking.objective=valid_best_ndcg_at_{k} (keeps the test window unseen) "
            f"or tracking.objective=test_ndcg_at_{k}"
        )
        raise ConfigError(
            f"tracking.objective={pooled_objectives[0]} pools every row across user-days, but "
            f"the sweep's jobs mix model={RANKER} with {others}: ranker scores compare only "
            f"within a user-day, so that objective cannot rank the jobs fairly. Rank them by a "
            f"per-user-day metric: {fix}"
        )


def objective_direction(
    objective: str,
    given: str | None,
    objective_key: str = "tracking.objective",
    direction_key: str = "tracking.objective_direction",
) -> str:
    """`max` or `min` for ranking by `objective`: `given`, else the metric's usual direction."""
    from replayml.errors import ConfigError
    from replayml.review import direction as usual_direction

    if given not in (None, "max", "min"):
        raise ConfigError(f"{direction_key}={given!r} is not valid: use max or min")
    found = given or usual_direction(objective)
    if found is None:
        raise ConfigError(
            f"{objective_key}={objective!r} has no usual direction: set {direction_key}=max "
            f"if higher is better, min if lower is"
        )
    return found


_PROCESS_LOCAL = ("_heartbeat", "_previous_sigterm")


class SweepCallback(Callback):
    """Hydra callback grouping a multirun under one MLflow parent run."""

    def __init__(self) -> None:
        self._state: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # parallel launchers pickle the callbacks with each job: the heartbeat's event and
        # the signal handler belong to the launching process only
        return {k: v for k, v in self.__dict__.items() if k not in _PROCESS_LOCAL}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from replayml.errors import ReplaymlError

        # Hydra turns a callback's exception into a warning and runs the jobs anyway: a sweep
        # that cannot be recorded as one (a bad objective, an unreachable store) stops here
        try:
            self._start(config)
        except ReplaymlError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None
        except Exception as exc:  # never a warning that lets the jobs run untracked
            log.debug("the sweep could not start", exc_info=True)
            self._finish(True)  # a parent run already created ends FAILED
            print(
                f"error: the sweep could not start, no job was run: {type(exc).__name__}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2) from None

    def _start(self, config: DictConfig) -> None:
        from omegaconf import OmegaConf

        from replayml.config.resolve import to_run_config
        from replayml.redact import install_log_redaction, redact_override, secret_values
        from replayml.tracking.run import start_heartbeat
        from replayml.tracking.store import store_spec
        from replayml.tracking.sweeps import start_parent

        raw = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        overrides = [str(o) for o in raw]  # type: ignore[union-attr]
        sweeper = config.hydra.sweeper
        given = sweeper.get("params")
        params = OmegaConf.to_container(given, resolve=False) if given else {}
        assert isinstance(params, dict)
        install_log_redaction(
            secret_values(overrides + [f"{k}={v}" for k, v in params.items()], [])
        )
        os.environ[JOBS_ENV] = str(parallel_jobs(config))
        cfg = to_run_config(config)
        check_objective(cfg.tracking.objective, cfg.model.eval_at, cfg.model.kind.value)
        # another sweeper (Optuna, ...) decides its jobs as it runs: they cannot be listed
        basic = sweeper.get("_target_") == BASIC_SWEEPER
        jobs = expand_sweep(overrides, {str(k): v for k, v in params.items()}) if basic else []
        root = Path(str(config.hydra.runtime.cwd))
        check_jobs(jobs, str(config.hydra.job.config_name or "") or None, root)
        direction = objective_direction(cfg.tracking.objective, cfg.tracking.objective_direction)
        spec = store_spec(cfg.tracking, Path(str(config.hydra.runtime.cwd)))
        if cfg.tracking.champion:  # one champion version for every job, whatever moves
            from replayml.champion import pin_for_sweep

            pin_for_sweep(cfg.tracking.champion, spec)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_id = f"{sweep_dir.parent.name}_{sweep_dir.name}"
        expected = [[redact_override(o) for o in job] for job in jobs]
        handle, sweep_id = start_parent(
            spec, sweep_id, [redact_override(o) for o in overrides], len(expected)
        )
        # what `replayml sweep` needs to print the sweep's table again as the sweep did
        handle.set_tags(
            {
                OBJECTIVE_TAG: cfg.tracking.objective,
                DIRECTION_TAG: direction,
            }
        )
        os.environ[PARENT_ENV] = handle.run_id
        os.environ[SWEEP_ENV] = sweep_id
        self._state = {"handle": handle, "spec": spec, "expected": expected,
                       "sweep_dir": sweep_dir,
                       "started": time.time() - 1.0,  # file times are coarser than the clock
                       "objective": cfg.tracking.objective,
                       "direction": direction}  # fmt: skip
        self._heartbeat = start_heartbeat(handle.client, handle.run_id)
        atexit.register(self._finish, True)
        try:  # a SIGTERM (a CI timeout) stops the jobs of any launcher, then the parent
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: leave signals alone
            self._previous_sigterm = None
        print(f"sweep {sweep_id}: {handle.url}", flush=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """Stop the sweep: jobs under way are asked to stop (each marks its run KILLED), the
        parent is summarised as FAILED, and the process exits 143 with no worker left."""
        import psutil

        print(
            f"error: received signal {signum}; stopping the sweep (jobs under way are marked "
            f"KILLED, the parent run FAILED)",
            file=sys.stderr,
            flush=True,
        )
        workers = psutil.Process().children(recursive=True)
        for proc in workers:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        # a worker marks its run KILLED and may then wait for more work: once no child run
        # is RUNNING any more (or the grace time is over) the workers left are killed
        deadline = time.monotonic() + WORKER_GRACE
        while time.monotonic() < deadline and self._children_running():
            workers = [p for p in workers if p.is_running()]
            if not workers:
                break
            time.sleep(0.2)
        for proc in workers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self._finish(True)
        os._exit(143)

    def _children_running(self) -> bool:
        from replayml.tracking.store import open_experiment

        if self._state is None:
            return False
        try:
            client, exp_id = open_experiment(self._state["spec"])
            parent = self._state["handle"].run_id
            running = client.search_runs(
                [exp_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent}' and "
                "attributes.status = 'RUNNING'",
                max_results=1,
            )
        except Exception:  # the store is unreachable: give the workers their grace time
            log.debug("cannot read the sweep's children", exc_info=True)
            return True
        return bool(running)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(False)

    def _finish(self, aborted: bool) -> None:
        from replayml.tracking.sweeps import collect, finish_parent

        if self._state is None:
            return
        getattr(self, "_heartbeat", threading.Event()).set()
        if getattr(self, "_previous_sigterm", None) is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)
        state, self._state = self._state, None
        from replayml.champion import SWEEP_ENV as CHAMPION_ENV

        for var in (PARENT_ENV, SWEEP_ENV, JOBS_ENV, CHAMPION_ENV):
            os.environ.pop(var, None)
        handle = state["handle"]
        _redact_multirun_yaml(state["sweep_dir"] / "multirun.yaml")
        try:
            _mark_dead_children(state["spec"], handle.run_id)
            summary = collect(
                state["spec"],
                handle.run_id,
                state["objective"],
                state["direction"],
                state["expected"],
                job_errors(state["sweep_dir"], state["started"]),
            )
            status = finish_parent(handle, summary, SUMMARY_METRICS, aborted)
        except Exception:
            log.exception("could not summarise sweep parent run %s", handle.run_id)
            handle.client.set_terminated(handle.run_id, "FAILED")
            return
        best = summary.best
        print(
            f"sweep {summary.sweep_id} {status}: {len(summary.children)} runs, "
            f"{len(summary.failed)} failed, "
            + (f"{len(summary.killed)} killed, " if summary.killed else "")
            + f"{len(summary.missing)} never ran; "
            f"best {best.url if best else '- (' + summary.why_no_best + ')'}",
            flush=True,
        )


def write_job_error(job_dir: Path, overrides: list[str], error: str) -> None:
    """Leave why a sweep job stopped before its run existed, for the sweep's table."""
    with contextlib.suppress(OSError):  # the job's own error is what the user must see
        job_dir.mkdir(parents=True, exist_ok=True)
        payload = {"overrides": overrides, "error": error}
        (job_dir / JOB_ERROR_FILE).write_text(json.dumps(payload), encoding="utf-8")


def job_errors(sweep_dir: Path, since: float = 0.0) -> dict[str, str]:
    """The errors the sweep's jobs left in their folders, by `job_key` of their overrides;
    files older than `since` (an earlier sweep into the same fixed folder) are ignored."""
    from replayml.tracking.sweeps import job_key

    found = {}
    for path in sorted(sweep_dir.glob(f"*/{JOB_ERROR_FILE}")):
        try:
            if path.stat().st_mtime < since:
                continue
            payload = json.loads(path.read_text(encoding="utf-8"))
            found[job_key(payload["overrides"])] = str(payload["error"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("unreadable job error file %s", path)
    return found


@dataclass(frozen=True)
class RecordedSweep:
    """What a sweep's parent run recorded about the sweep itself."""

    objective: str
    direction: str
    never_ran: list[list[str]] | None  # None while the sweep has not finished
    #: why each job that never ran stopped, by `job_key` of its overrides
    errors: dict[str, str] = field(default_factory=dict)


def recorded_sweep(spec: Any, parent_run_id: str) -> RecordedSweep:
    """The objective, its direction and the jobs that never ran, as the parent recorded them.

    A parent made before the objective was tagged falls back to its `best_<metric>` metric and
    that metric's usual direction, else `TrackingConfig`'s defaults.
    """
    from replayml.config.schema import TrackingConfig
    from replayml.review import direction as usual_direction
    from replayml.tracking.store import open_experiment
    from replayml.tracking.sweeps import job_key

    client: Any
    client, _ = open_experiment(spec)
    run = client.get_run(parent_run_id)
    tags = run.data.tags
    objective = tags.get(OBJECTIVE_TAG)
    if not objective:
        best = sorted(k.removeprefix("best_") for k in run.data.metrics if k.startswith("best_"))
        objective = best[0] if best else TrackingConfig().objective
    direction = tags.get(DIRECTION_TAG) or usual_direction(objective) or "max"
    never_ran: list[list[str]] | None = None
    errors: dict[str, str] = {}
    if NEVER_RAN_TAG in tags:
        try:
            never_ran = [list(map(str, job)) for job in json.loads(tags[NEVER_RAN_TAG])]
        except ValueError:  # cut at MLflow's tag limit: the summary artifact has all of it
            never_ran = [[]]
        if never_ran:  # the summary artifact has every job that never ran, and why
            with tempfile.TemporaryDirectory(prefix="replayml-sweep-") as tmp:
                path = client.download_artifacts(parent_run_id, SUMMARY_JSON, tmp)
                rows = json.loads(Path(path).read_text())
            never = [r for r in rows if r.get("status") == "NEVER_RAN"]
            never_ran = [[str(o) for o in r["overrides"]] for r in never]
            errors = {job_key(r["overrides"]): str(r["error"]) for r in never if r.get("error")}
    return RecordedSweep(objective, direction, never_ran, errors)


def _mark_dead_children(spec: Any, parent_run_id: str) -> None:
    """Children left RUNNING by a worker that died mid-job are marked KILLED (with a tag)."""
    from replayml.tracking.doctor import find_ghosts, mark_killed

    ghosts = find_ghosts(spec, stale_after=float("inf"), parent_run_id=parent_run_id)
    if ghosts:
        mark_killed(spec, ghosts)


def _redact_multirun_yaml(path: Path) -> None:
    """Hydra saves the sweep's config and overrides verbatim in multirun.yaml: redact it."""
    import yaml

    from replayml.redact import redact_override, redact_tree, scrub

    if not path.is_file():
        return
    doc = yaml.safe_load(path.read_text())
    overrides = doc.get("hydra", {}).get("overrides", {})
    for key in ("task", "hydra"):
        if isinstance(overrides.get(key), list):
            overrides[key] = [redact_override(str(o)) for o in overrides[key]]
    job = doc.get("hydra", {}).get("job", {})
    if isinstance(job.get("override_dirname"), str):
        job["override_dirname"] = ",".join(
            redact_override(o) for o in job["override_dirname"].split(",")
        )
    path.write_text(scrub(yaml.safe_dump(redact_tree(doc, set()), sort_keys=False)))


def sweep_context() -> tuple[str | None, dict[str, str]]:
    """Parent run id and sweep tags for a job, only when running inside a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None, {}
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return None, {}
    hc = HydraConfig.get()
    return parent, {
        "replayml.sweep_id": os.environ.get(SWEEP_ENV, ""),
        "replayml.sweep.job_num": str(hc.job.num),
        "replayml.sweep.role": "child",
    }
