"""Benchmark 3: logging 3 curves x 1000 iterations with `RunHandle.log_curves`.

Baseline: one `mlflow.log_metric` call per value, the way an ad-hoc training loop logs. Both
write into the same temporary SQLite store, in their own runs, interleaved; only the logging
calls are timed. Afterwards every value is read back with `MlflowClient.get_metric_history`.
Target: <= 1 s for `log_curves`.
"""

from __future__ import annotations

import gc
import math
import time
from collections import defaultdict
from typing import Any

from _common import (
    PROJECT,
    Check,
    Options,
    Report,
    median,
    parse_options,
    progress,
    ratio,
    rotated,
    samples_cell,
    secs,
    set_process_env,
    sqlite_uri,
    table,
    temp_dir,
)

NAME = "logging"
TARGET = 1.0
ITERATIONS = 1000
OURS = "`RunHandle.log_curves` (batched)"
BASELINE = "`mlflow.log_metric` per value (baseline)"


def curves() -> dict[str, list[float]]:
    """Three deterministic, curve-shaped series of ITERATIONS values."""
    return {
        "train_logloss": [0.2 + 0.5 * math.exp(-i / 150) for i in range(ITERATIONS)],
        "valid_logloss": [0.25 + 0.45 * math.exp(-i / 120) + 1e-5 * i for i in range(ITERATIONS)],
        "valid_auc": [0.9 - 0.4 * math.exp(-i / 100) for i in range(ITERATIONS)],
    }


def _ours(spec: Any, data: dict[str, list[float]]) -> tuple[str, float]:
    from replayml.tracking.run import tracked_run

    with tracked_run(spec, "bench-log-curves", {"bench": "log_curves"}) as run:
        start = time.perf_counter()
        run.log_curves(data)  # steps 1..N, as the pipeline logs them
        seconds = time.perf_counter() - start
        return run.run_id, seconds


def _baseline(experiment_id: str, data: dict[str, list[float]]) -> tuple[str, float]:
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, run_name="bench-log-metric") as active:
        start = time.perf_counter()
        for name, values in data.items():
            for i, value in enumerate(values):
                mlflow.log_metric(name, value, step=i + 1)
        seconds = time.perf_counter() - start
        return active.info.run_id, seconds


def _verify(client: Any, run_id: str, data: dict[str, list[float]]) -> int:
    """How many logged values are in the store with the right step and value."""
    found = 0
    for name, values in data.items():
        history = {m.step: m.value for m in client.get_metric_history(run_id, name)}
        found += sum(1 for i, v in enumerate(values) if history.get(i + 1) == v)
    return found


def run(opts: Options) -> Report:
    """Time both ways of logging, interleaved, then read every value back."""
    set_process_env()
    import mlflow

    from replayml.config.schema import TrackingConfig
    from replayml.tracking.store import open_experiment, store_spec

    data = curves()
    expected = sum(len(v) for v in data.values())
    wall: dict[str, list[float]] = defaultdict(list)
    verified: dict[str, list[int]] = defaultdict(list)
    previous_uri = mlflow.get_tracking_uri()
    with temp_dir("logging") as tmp:
        spec = store_spec(TrackingConfig(uri=sqlite_uri(tmp / "mlflow.db")), PROJECT)
        # untimed: create the store's tables and the experiment (its artifacts stay in tmp)
        client, experiment_id = open_experiment(spec)
        mlflow.set_tracking_uri(spec.uri)
        try:
            for r in range(opts.repeats):
                for name in rotated([OURS, BASELINE], r):
                    progress(f"logging: repeat {r + 1}/{opts.repeats}: {name}")
                    gc.collect()
                    if name == OURS:
                        run_id, seconds = _ours(spec, data)
                    else:
                        run_id, seconds = _baseline(str(experiment_id), data)
                    wall[name].append(seconds)
                    verified[name].append(_verify(client, run_id, data))
        finally:
            mlflow.set_tracking_uri(previous_uri)
    ours, base = median(wall[OURS]), median(wall[BASELINE])
    rows = [
        [
            name,
            secs(median(wall[name])),
            ratio(median(wall[name]) / base),
            f"{min(verified[name])}/{expected}",
            samples_cell(wall[name]),
        ]
        for name in (OURS, BASELINE)
    ]
    notes = (
        f"3 metrics × {ITERATIONS} iterations = {expected} values per run; {opts.repeats} "
        f"repeat(s), interleaved, each in a new run of one temporary SQLite store. Only the "
        f"logging calls are timed (run creation is the same for both). 'in store' counts "
        f"values read back with `get_metric_history` at the right step with the exact value "
        f"(the worst repeat)."
    )
    all_there = all(min(verified[n]) == expected for n in (OURS, BASELINE))
    checks = [
        Check(
            NAME,
            f"`log_curves` of 3 × {ITERATIONS} values",
            f"≤ {TARGET:.2f} s",
            f"{secs(ours)} ({ratio(ours / base)} of per-value `log_metric`, {secs(base)})",
            ours <= TARGET,
        ),
        Check(
            NAME,
            "every logged value is in the store",
            f"{expected}/{expected}",
            f"ours {min(verified[OURS])}, baseline {min(verified[BASELINE])}",
            all_there,
        ),
    ]
    return Report(
        "3. Curve logging: 3 metrics × 1000 iterations",
        [
            table(["contender", "median", "vs baseline", "in store", "samples (s)"], rows),
            notes,
        ],
        checks,
    )


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_logging.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    print(run(Options(repeats=args.repeats)).markdown())


if __name__ == "__main__":
    main()
