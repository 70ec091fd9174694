"""Benchmark 5: from a finished run to a registered A/B candidate, and `review` on a store of
1,000 runs.

Set-up (untimed): `python train.py experiment=quick` twice (the second with another learning
rate) into a temporary SQLite store, then 998 more runs copied from the first run's params,
tags and metrics with `MlflowClient.log_batch`, so the store holds 1,000 replayml runs.

(a) Registering the first run as an A/B candidate (`alias ab`, A/B label and group):
`replayml.registry.register(...)` in-process, and `replayml register RUN --name ... --alias ab`
as a command (interpreter start and imports included). Baseline: what a team writes by hand,
`mlflow.register_model(model_uri, name, tags=...)` + `set_registered_model_alias`. Ours also
checks the run, writes the lineage tags, and moves the alias by compare-and-set (a claim tag,
a wait of a few round trips, read-backs, audit tags), which is where its extra time goes.

(b) Reviewing the second run against the first: `replayml.review.review(...)` in-process and
`replayml review RUN --baseline RUN` as a command. Baseline: two `MlflowClient.get_run` calls
and a hand-written metric-delta and param-diff table.

Contenders interleaved in a rotating order; medians of `--repeats` repeats (each repeat takes
SAMPLES samples of every in-process contender).
"""

from __future__ import annotations

import gc
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    PROJECT,
    PYTHON,
    Check,
    Options,
    Report,
    child_env,
    median,
    parse_options,
    progress,
    ratio,
    require_data,
    rotated,
    run_checked,
    samples_cell,
    secs,
    set_process_env,
    sqlite_uri,
    table,
    temp_dir,
)

NAME = "registry"
N_RUNS = 1000
SAMPLES = 3
TARGET_REGISTER = 2.0  # seconds, in-process, local store
TARGET_REVIEW = 1.0
RUN_LINE = re.compile(r"run: \S+/runs/(?P<id>[0-9a-f]{32})")

REG_OURS = "`registry.register(..., alias='ab')` (in-process)"
REG_CLI = "`replayml register RUN --name N --alias ab ...` (command)"
REG_BASE = "`mlflow.register_model` + `set_registered_model_alias` (baseline)"
REV_OURS = "`review.review(run, baseline=...)` (in-process)"
REV_CLI = "`replayml review RUN --baseline RUN` (command)"
REV_BASE = "2 × `get_run` + hand-written delta table (baseline)"


def _train(uri: str, folder: Path, *overrides: str) -> str:
    proc = run_checked(
        [
            PYTHON,
            "train.py",
            "experiment=quick",
            f"tracking.uri={uri}",
            f"output_dir={folder / 'out'}",
            f"hydra.run.dir={folder / 'hydra'}",
            *overrides,
        ],
        cwd=PROJECT,
        env=child_env(uri),
        what="train.py",
    )
    found = RUN_LINE.search(proc.stdout)
    if not found:
        raise RuntimeError(f"train.py printed no run link: {proc.stdout[-500:]}")
    return found["id"]


def _fill(client: Any, run_id: str, total: int) -> int:
    """Copy one run's record into new runs until the experiment holds `total` runs."""
    from mlflow.entities import Metric, Param, RunTag

    src = client.get_run(run_id)
    exp = src.info.experiment_id
    now = int(time.time() * 1000)
    params = [Param(k, v) for k, v in src.data.params.items()]
    tags = [RunTag(k, v) for k, v in src.data.tags.items() if not k.startswith("mlflow.")]
    metrics = [Metric(k, v, now, 0) for k, v in src.data.metrics.items()]
    have = len(client.search_runs([exp], max_results=total + 10))
    for i in range(total - have):
        run = client.create_run(exp, run_name=f"bench-copy-{i}")
        for j in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[j : j + 100])
        for j in range(0, len(tags), 100):
            client.log_batch(run.info.run_id, tags=tags[j : j + 100])
        client.log_batch(run.info.run_id, metrics=metrics)
        client.set_terminated(run.info.run_id, "FINISHED")
    return len(client.search_runs([exp], max_results=total + 10))


def _baseline_register(client: Any, uri: str, run_id: str, name: str) -> str:
    import mlflow

    model_uri = client.get_run(run_id).data.tags["replayml.model_uri"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # register_model reads the process-wide URI
    try:
        mv = mlflow.register_model(
            model_uri, name, tags={"ab_label": "treatment", "ab_group": "bench"}
        )
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias(name, "ab", mv.version)
    return str(mv.version)


def _baseline_review(client: Any, run_id: str, baseline_id: str) -> str:
    run, base = client.get_run(run_id), client.get_run(baseline_id)
    lines = ["| metric | run | baseline | delta |", "|---|---|---|---|"]
    for key in sorted(k for k in run.data.metrics if k.startswith("test_")):
        a, b = run.data.metrics[key], base.data.metrics.get(key)
        delta = "" if b is None else f"{a - b:+.5f}"
        lines.append(f"| {key} | {a:.5f} | {b if b is None else f'{b:.5f}'} | {delta} |")
    p, q = run.data.params, base.data.params
    lines += ["", "| param | baseline | run |", "|---|---|---|"]
    lines += [f"| {k} | {q.get(k)} | {p.get(k)} |" for k in sorted(set(p) | set(q))
              if p.get(k) != q.get(k)]  # fmt: skip
    return "\n".join(lines)


def _sample(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(opts: Options) -> Report:
    """Set up the store, then time registering and reviewing, interleaved."""
    require_data()
    set_process_env()
    from mlflow.tracking import MlflowClient

    from replayml.config.schema import TrackingConfig
    from replayml.registry import register
    from replayml.review import review
    from replayml.tracking.store import store_spec

    wall: dict[str, list[float]] = defaultdict(list)
    with temp_dir("registry") as tmp:
        uri = sqlite_uri(tmp / "mlflow.db")
        progress("registry: training the base run (train.py experiment=quick)")
        base = _train(uri, tmp / "base", "tracking.run_name=bench-base")
        progress("registry: training the second run")
        other = _train(uri, tmp / "other", "model.learning_rate=0.1")
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        progress(f"registry: filling the store to {N_RUNS} runs")
        n_runs = _fill(client, base, N_RUNS)
        spec = store_spec(TrackingConfig(uri=uri), PROJECT)
        env = child_env(uri)
        counter = iter(range(10_000))

        def ours_register() -> None:
            done = register(
                base, f"bench-ours-{next(counter)}", spec=spec, alias="ab",
                ab_label="treatment", ab_group="bench",
            )  # fmt: skip
            assert done.alias_move is not None and done.alias_move.to_version == done.version

        def cli_register() -> None:
            proc = run_checked(
                [PYTHON, "-m", "replayml", "register", base, "--name",
                 f"bench-cli-{next(counter)}", "--alias", "ab", "--ab-label", "treatment",
                 "--ab-group", "bench", "--tracking-uri", uri],
                cwd=tmp, env=env, what="replayml register",
            )  # fmt: skip
            assert "@ab: version none -> 1" in proc.stdout, proc.stdout

        def base_register() -> None:
            _baseline_register(client, uri, base, f"bench-base-{next(counter)}")

        def ours_review() -> None:
            assert review(other, baseline=base, spec=spec).markdown

        def cli_review() -> None:
            cmd = [PYTHON, "-m", "replayml", "review", other, "--baseline", base,
                   "--tracking-uri", uri]  # fmt: skip
            run_checked(cmd, cwd=tmp, env=env, what="replayml review")

        def base_review() -> None:
            assert _baseline_review(client, other, base)

        in_process = {
            REG_OURS: ours_register,
            REG_BASE: base_register,
            REV_OURS: ours_review,
            REV_BASE: base_review,
        }
        commands = {REG_CLI: cli_register, REV_CLI: cli_review}
        for fn in in_process.values():  # untimed warm-up: imports, caches, first queries
            fn()
        for r in range(opts.repeats):
            progress(f"registry: repeat {r + 1}/{opts.repeats}")
            for name in rotated(list(in_process), r):
                for _ in range(SAMPLES):
                    wall[name].append(_sample(in_process[name]))
            for name in rotated(list(commands), r):
                wall[name].append(_sample(commands[name]))
    reg_ours, reg_base = median(wall[REG_OURS]), median(wall[REG_BASE])
    rev_ours, rev_base = median(wall[REV_OURS]), median(wall[REV_BASE])

    def rows(names: list[str], base_name: str) -> list[list[str]]:
        b = median(wall[base_name])
        return [
            [n, secs(median(wall[n])), ratio(median(wall[n]) / b), samples_cell(wall[n])]
            for n in names
        ]

    head = ["contender", "median", "vs baseline", "samples (s)"]
    notes = (
        f"Local SQLite store holding {n_runs} runs (2 trained with `train.py experiment=quick` "
        f"on the project's data, the rest copies). In-process contenders: {SAMPLES} samples per "
        f"repeat after one untimed warm-up; commands: 1 sample per repeat, interpreter start "
        f"and imports included. Every registration creates a new registered model, so none "
        f"finds an alias to move from."
    )
    checks = [
        Check(
            NAME,
            "finished run -> registered A/B candidate (in-process)",
            f"≤ {TARGET_REGISTER:.1f} s",
            f"{secs(reg_ours)} ({ratio(reg_ours / reg_base)} of the hand-written "
            f"{secs(reg_base)})",
            reg_ours <= TARGET_REGISTER,
        ),
        Check(
            NAME,
            f"review on a store of {n_runs} runs (in-process)",
            f"≤ {TARGET_REVIEW:.1f} s",
            f"{secs(rev_ours)} ({ratio(rev_ours / rev_base)} of 2 × get_run, {secs(rev_base)})",
            rev_ours <= TARGET_REVIEW,
        ),
    ]
    return Report(
        f"5. Registry and review ({n_runs} runs in the store)",
        [
            "**(a) finished run -> registered A/B candidate**",
            table(head, rows([REG_OURS, REG_CLI, REG_BASE], REG_BASE)),
            "**(b) review of one run against another**",
            table(head, rows([REV_OURS, REV_CLI, REV_BASE], REV_BASE)),
            notes,
        ],
        checks,
    )


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_registry.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    report = run(Options(repeats=args.repeats))
    print(report.markdown())
    print()
    print(
        table(
            ["check", "target", "measured", "verdict"],
            [
                [c.what, c.target, c.measured, "PASS" if c.passed else "MISS"]
                for c in report.checks
            ],
        )
    )


if __name__ == "__main__":
    main()
