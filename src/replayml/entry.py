"""The body of `train.py`: read Hydra's runtime, convert the config once, run, print the link."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from replayml.errors import ReplaymlError, RunKilled

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _hydra_set_aside() -> Iterator[None]:
    """Hydra's global state put aside (and back) for a composition inside a Hydra app."""
    from hydra.core.global_hydra import GlobalHydra

    saved = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def train_from_hydra(cfg: DictConfig) -> float | None:
    """Run one training job from a Hydra-composed config; returns the value of the sweep's
    objective (`tracking.objective`) for sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from replayml.redact import env_interpolated_keys, install_log_redaction, secret_values
    from replayml.sweep import sweep_context, unescape_override
    from replayml.tracking.run import sigterm_raises

    hc = HydraConfig.get()
    parent_run_id, sweep_tags = sweep_context()
    choices = {
        str(k): str(v) for k, v in hc.runtime.choices.items() if not str(k).startswith("hydra")
    }
    env_keys = env_interpolated_keys(cfg)
    env_values = [str(OmegaConf.select(cfg, k, default="")) for k in env_keys]
    # raw strings: reading a ListConfig item would resolve `${oc.env:...}` inside overrides
    task_overrides = [str(o) for o in OmegaConf.to_container(hc.overrides.task, resolve=False)]
    if parent_run_id:  # a sweep job: the sweeper escaped special characters
        task_overrides = [unescape_override(o) for o in task_overrides]
    install_log_redaction(secret_values(task_overrides, env_values))
    # the project root is where train.py started, also when `hydra.job.chdir=True` moved the
    # job into its output folder: paths in conf/ stay relative to the project root
    root = Path(hc.runtime.cwd)
    # a SIGTERM before the run exists says so in one line too (a sweep's jobs leave SIGTERM
    # to the sweep, which stops them all)
    early_sigterm = contextlib.nullcontext() if parent_run_id else sigterm_raises()
    with early_sigterm:
        return _train(
            cfg, hc, root, task_overrides, choices, env_keys, parent_run_id, sweep_tags
        )  # fmt: skip


def _train(
    cfg: DictConfig,
    hc: Any,
    root: Path,
    task_overrides: list[str],
    choices: dict[str, str],
    env_keys: list[str],
    parent_run_id: str | None,
    sweep_tags: dict[str, str],
) -> float | None:
    from replayml.config.resolve import to_run_config
    from replayml.pipeline import RunContext, run_experiment

    try:
        run_cfg = to_run_config(cfg)
        extra_tags = dict(sweep_tags)
        if hc.job.config_name == "params" and (root / "params.yaml").is_file():
            # the DVC stage: which values this experiment set (`dvc exp run -S ...`)
            from replayml.config.compose import (
                check_params_fresh,
                check_stage_owned,
                composed_defaults,
                params_changes,
            )
            from replayml.redact import redact_override

            changes: list[str] | None = None
            try:
                with _hydra_set_aside():  # composing conf/ needs Hydra's global state
                    fresh = composed_defaults(root / "conf")
                changes = params_changes(root / "conf", root / "params.yaml", fresh)
                said = " ".join(redact_override(c) for c in changes) or "(none: conf/'s defaults)"
            except Exception as exc:  # a record of what was set, never a reason not to train
                said = f"(unknown: conf/ did not compose: {str(exc).splitlines()[0][:200]})"
            extra_tags["replayml.dvc.params_changes"] = said
            if changes is not None:
                check_stage_owned(changes)
                if not os.environ.get("DVC_EXP_NAME"):  # `dvc repro`: params.yaml is conf/'s
                    check_params_fresh(root / "conf", root / "params.yaml", fresh)
        ctx = RunContext(
            project_root=root,
            output_dir=root / (run_cfg.output_dir or hc.runtime.output_dir),
            overrides=tuple(task_overrides),
            choices=choices,
            env_keys=frozenset(env_keys),
            parent_run_id=parent_run_id,
            extra_tags=extra_tags,
        )
        with contextlib.chdir(root):  # and so do relative paths from the environment
            result = run_experiment(run_cfg, ctx)
    except (ReplaymlError, RunKilled) as exc:
        message = f"error: {exc}"
        if isinstance(exc, RunKilled):
            run_id = getattr(exc, "replayml_run_id", "")
            message += f"; run {run_id} is marked KILLED" if run_id else "; no run was created"
        _to_log_files(message)
        print(message, file=sys.stderr)
        if parent_run_id and isinstance(exc, ReplaymlError):
            # in a sweep: fail this job, let the others run; Hydra reports a compact
            # exception at the end by its message alone, without a traceback
            from hydra.errors import CompactHydraException

            from replayml.redact import redact_override, scrub
            from replayml.sweep import write_job_error

            write_job_error(
                Path(hc.runtime.output_dir),
                [redact_override(o) for o in task_overrides],
                scrub(str(exc)),
            )

            raise CompactHydraException(message) from None
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # a crash (a user's feature builder, a bug): Hydra reports it
        if parent_run_id:  # and the sweep's table says why the job never made a run
            from replayml.redact import redact_override, scrub
            from replayml.sweep import write_job_error

            write_job_error(
                Path(hc.runtime.output_dir),
                [redact_override(o) for o in task_overrides],
                scrub(f"{type(exc).__name__}: {exc}"),
            )
        raise
    except KeyboardInterrupt as exc:
        if parent_run_id:  # Ctrl-C stops the whole sweep: the sweep reports it
            raise
        run_id = getattr(exc, "replayml_run_id", "")
        said = f"run {run_id} is marked KILLED" if run_id else "no run was created"
        message = f"error: interrupted (Ctrl-C); {said}"
        _to_log_files(message)
        print(message, file=sys.stderr)
        raise SystemExit(130) from None
    print(f"run: {result.url}")
    # what an optimising sweeper (Optuna, Nevergrad) minimises or maximises: the objective
    # the sweep selects by, so `tracking.objective=valid_best_auc` keeps the test window unseen
    return result.metrics.get(run_cfg.tracking.objective)


def _to_log_files(message: str) -> None:
    """Write the error into the job's log file (Hydra's `train.log`) too, not on the console."""
    record = logging.LogRecord(__name__, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def exit_now(code: object = 0) -> None:
    """End the process like `sys.exit(code)`, without the interpreter's final teardown.

    The interpreter's own shutdown steps run in its order: threading's exit hooks (worker
    pools such as joblib's are stopped), non-daemon threads are joined, then every exit
    handler (logging, MLflow, temporary folders, child processes) and the standard streams are
    flushed. What is skipped is freeing, one by one, the objects of the thousands of modules a
    run imports, which takes about a second on a small machine.
    """
    import threading

    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first
    if shutdown is None or threading.current_thread() is not threading.main_thread():
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # like sys.exit("message")
        print(code, file=sys.stderr)
        status = 1
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to save
            stream.flush()
    os._exit(status)
