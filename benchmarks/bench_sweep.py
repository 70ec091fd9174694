"""Benchmark 8: a Hydra sweep with the basic (sequential) launcher vs the joblib launcher.

Everything runs in a throwaway clone of the project (`_clone.py`). The same grid,
`model.learning_rate=0.03,0.05,0.08,0.1 model.num_leaves=15,31 model.num_boost_round=100`
(8 jobs; `--quick`: learning_rate=0.05,0.1, 4 jobs), runs as `python train.py -m ...` and as
`python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2 ...` (each job then gets
cores / 2 LightGBM threads), interleaved in a rotating order, each sweep into its own copy of
an initialised temporary SQLite store. Target: speed-up sequential / parallel at least 1.6x
(on 2 cores). Afterwards the store must hold the parent run and every child, all FINISHED.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections import defaultdict
from pathlib import Path

from _clone import Clone, make_clone, steps_of
from _common import (
    PYTHON,
    Check,
    Options,
    Report,
    StoreFactory,
    median,
    parse_options,
    progress,
    ratio,
    require_data,
    rotated,
    run_checked,
    samples_cell,
    secs,
    sqlite_uri,
    table,
    temp_dir,
    timed,
)

NAME = "sweep"
TARGET = 1.6
N_JOBS = 2
GRID = ["model.learning_rate=0.03,0.05,0.08,0.1", "model.num_leaves=15,31"]
QUICK_GRID = ["model.learning_rate=0.05,0.1", "model.num_leaves=15,31"]
FIXED = ["model.num_boost_round=100"]
BASIC = "basic"
JOBLIB = "joblib"
LAUNCHER = {BASIC: [], JOBLIB: ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}"]}
LABELS = {
    BASIC: "`python train.py -m ...` (basic launcher, sequential)",
    JOBLIB: f"`python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs={N_JOBS} ...`",
}
# Reads every run of the store: the sweep parents and their children, with their status.
_STORE_RUNS = """
import json, sys
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
runs = client.search_runs(exps, run_view_type=ViewType.ALL, max_results=5000)
print(json.dumps([
    {"id": r.info.run_id, "status": r.info.status,
     "role": r.data.tags.get("replayml.sweep.role", ""),
     "parent": r.data.tags.get("mlflow.parentRunId", "")}
    for r in runs
]))
"""


def _n_jobs(grid: list[str]) -> int:
    n = 1
    for override in grid:
        n *= len(override.split("=", 1)[1].split(","))
    return n


def _store_check(clone: Clone, folder: Path, expected: int) -> tuple[bool, str]:
    """(ok, description): one FINISHED parent and `expected` FINISHED children in the store."""
    uri = sqlite_uri(folder / "mlflow.db")
    proc = run_checked(
        [PYTHON, "-c", _STORE_RUNS, uri], cwd=folder, env=clone.env(uri), what="reading the store"
    )
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    parents = [r for r in runs if r["role"] == "parent"]
    if len(parents) != 1:
        return False, f"{len(parents)} parent runs, {len(runs)} runs in all"
    parent = parents[0]
    children = [r for r in runs if r["parent"] == parent["id"]]
    finished = [r for r in children if r["status"] == "FINISHED"]
    ok = parent["status"] == "FINISHED" and len(children) == expected == len(finished)
    others = sorted({r["status"] for r in children} - {"FINISHED"})
    text = f"parent {parent['status']}, {len(finished)}/{expected} children FINISHED"
    if len(children) != expected or others:
        text += f" ({len(children)} children; other statuses: {', '.join(others) or '-'})"
    return ok, text


def run(opts: Options) -> Report:
    """Both launchers `opts.repeats` times each, interleaved; then check each store."""
    grid = QUICK_GRID if opts.quick else GRID
    expected = _n_jobs(grid)
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    load: dict[str, list[float]] = defaultdict(list)
    job_steps: dict[str, dict[str, list[float]]] = {
        BASIC: defaultdict(list),
        JOBLIB: defaultdict(list),
    }
    stores_ok: dict[str, list[str]] = defaultdict(list)
    all_ok = True
    with temp_dir(NAME) as tmp:
        clone = make_clone(tmp)
        stores = StoreFactory(tmp / "stores")
        for r in range(opts.repeats):
            for name in rotated([BASIC, JOBLIB], r):
                progress(f"{NAME}: repeat {r + 1}/{opts.repeats}: {expected} jobs, {name}")
                folder = stores.new(name)
                uri = sqlite_uri(folder / "mlflow.db")
                cmd = [
                    PYTHON,
                    "train.py",
                    "-m",
                    *LAUNCHER[name],
                    *grid,
                    *FIXED,
                    f"hydra.sweep.dir={folder / 'multirun'}",
                ]
                load[name].append(os.getloadavg()[0])
                before = _children_cpu()
                seconds, _ = timed(
                    cmd, cwd=clone.root, env=clone.env(uri), what=f"sweep ({name})", timeout=3600
                )
                wall[name].append(seconds)
                cpu[name].append(_children_cpu() - before)
                ok, text = _store_check(clone, folder, expected)
                all_ok &= ok
                stores_ok[name].append(text)
                for step, value in _job_steps(folder / "multirun").items():
                    job_steps[name][step].append(value)
    return _report(opts, grid, expected, wall, cpu, load, job_steps, stores_ok, all_ok)


def _job_steps(sweep_dir: Path) -> dict[str, float]:
    """Each `replayml.progress` step summed over the sweep's jobs (their Hydra job logs)."""
    total: dict[str, float] = defaultdict(float)
    for log in sorted(sweep_dir.glob("*/*.log")):
        for step, value in steps_of(log.read_text(errors="replace")).items():
            total[step] += value
    return dict(total)


def _children_cpu() -> float:
    """User + system CPU seconds of all finished (and waited-for) child processes so far: the
    sweep's process and, through it, its joblib workers."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _report(
    opts: Options,
    grid: list[str],
    expected: int,
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
    load: dict[str, list[float]],
    job_steps: dict[str, dict[str, list[float]]],
    stores_ok: dict[str, list[str]],
    all_ok: bool,
) -> Report:
    basic = median(wall[BASIC])
    par = median(wall[JOBLIB])
    rows = [
        [
            LABELS[name],
            secs(median(wall[name])),
            secs(median(wall[name]) / expected),
            ratio(basic / median(wall[name])),
            secs(median(cpu[name])),
            f"{median(cpu[name]) / median(wall[name]):.2f}",
            "; ".join(sorted(set(stores_ok[name]))),
            samples_cell(wall[name]),
            ", ".join(f"{v:.2f}" for v in load[name]),
        ]
        for name in (BASIC, JOBLIB)
    ]
    main = table(
        [
            "sweep",
            "median wall",
            "per job",
            "speed-up vs basic",
            "CPU time",
            "cores busy",
            "store",
            "samples (s)",
            "load avg at start",
        ],
        rows,
    )
    steps = list(dict.fromkeys([*job_steps[BASIC], *job_steps[JOBLIB]]))
    step_rows = [
        [step, *(secs(median(job_steps[n].get(step, [0.0]))) for n in (BASIC, JOBLIB))]
        for step in steps
    ]
    step_rows.append(["wall time of the whole sweep", secs(basic), secs(par)])
    step_table = table(
        ["step, summed over the jobs (from their logs)", "basic", f"joblib n_jobs={N_JOBS}"],
        step_rows,
    )
    jobs = f"{expected} jobs" + (" (--quick: 4-job grid)" if opts.quick else "")
    notes = (
        f"Grid: `{' '.join(grid + FIXED)}` = {jobs}; {opts.repeats} sweep(s) per launcher, "
        f"rotating order, each into its own copy of an initialised temporary SQLite store "
        f"(tracked via $MLFLOW_TRACKING_URI) with hydra.sweep.dir in the temporary folder. "
        f"{os.cpu_count()} CPUs: the basic launcher runs the jobs one after another in one "
        f"process with {os.cpu_count()} LightGBM threads each; joblib runs {N_JOBS} worker "
        f"processes with {max(1, (os.cpu_count() or 1) // N_JOBS)} thread(s) each. Feature "
        f"building, scoring and logging are single-threaded, so they are what parallel jobs "
        f"overlap. CPU time = user + system seconds of the sweep's processes (its joblib "
        f"workers included); cores busy = CPU time / wall, the cores the sweep actually got. "
        f"A speed-up needs idle cores: with the 1-minute load average near the core count "
        f"(other work running), the parallel sweep cannot get more than the sequential one, "
        f"and its workers also pay their own interpreter start and imports. The step table "
        f"sums each step over the jobs (job-seconds): in parallel, two jobs share the cores, "
        f"so a step's job-seconds grow when the cores are contended; a worker's first job "
        f"also pays the imports in 'connecting to the tracking store'."
    )
    checks = [
        Check(
            NAME,
            f"speed-up basic / joblib n_jobs={N_JOBS}, {jobs}",
            f"≥ {TARGET:.1f}×",
            f"{ratio(basic / par)} ({secs(basic)} vs {secs(par)}; cores busy "
            f"{median(cpu[BASIC]) / basic:.2f} vs {median(cpu[JOBLIB]) / par:.2f})",
            basic / par >= TARGET,
        ),
        Check(
            NAME,
            f"parent + {expected} children FINISHED in the store (both launchers)",
            "all FINISHED",
            "; ".join(f"{n}: {', '.join(sorted(set(stores_ok[n])))}" for n in (BASIC, JOBLIB)),
            all_ok,
        ),
    ]
    return Report(
        "8. Sweeps: basic (sequential) vs joblib launcher", [main, step_table, notes], checks
    )


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_sweep.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    require_data()
    print(run(Options(repeats=args.repeats, quick=args.quick)).markdown())


if __name__ == "__main__":
    sys.exit(main())
