"""Benchmark 1: `python train.py` (default config) vs a peer script and bare scripts.

Every contender is a whole command in a subprocess, interleaved, each against its own copy of
an initialised temporary SQLite store. Targets: train.py <= 0.8x the peer's wall time and
<= 1.10x the bare script's. The bare script on raw columns does less work than train.py (no
features); so the same target is also checked for the same work: train.py on cached feature
matrices (`features_dir=`, as the DVC train stage runs) against a bare read of those matrices
and `lgb.train` for the same rounds. The step timings train.py logs show where its time goes.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

import peer_train
from _common import (
    BENCH_DIR,
    DATA,
    PROJECT,
    PYTHON,
    Check,
    Options,
    Report,
    StoreFactory,
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
    sqlite_uri,
    table,
    temp_dir,
    timed,
)

NAME = "train"
PEER_TARGET = 0.8
BARE_TARGET = 1.10
STEP_LINE = re.compile(
    r"\[replayml\.progress\]\[INFO\] - (?P<step>[^\n]+?): (?P<secs>\d+(?:\.\d+)?) s$", re.M
)
TRAINED_LINE = re.compile(r"trained (?P<iters>\d+) iterations, best (?P<best>\d+)")
CACHED = "train.py (cached matrices)"
OTHER = "other (interpreter, imports, preprocessing, scoring, plots, artifacts)"


@dataclass(frozen=True)
class Windows:
    """The default config's resolved date windows (the days every contender reads)."""

    train_start: str
    train_end: str
    valid_day: str
    test_day: str

    def args(self) -> list[str]:
        return [
            "--data",
            str(DATA),
            "--train-start",
            self.train_start,
            "--train-end",
            self.train_end,
            "--valid-day",
            self.valid_day,
            "--test-day",
            self.test_day,
        ]


def default_windows_and_params_check() -> tuple[Windows, list[str]]:
    """Resolve the default config's windows; compare the baselines' parameters with ours."""
    import peer_train

    from replayml.config.compose import compose
    from replayml.config.resolve import resolve_dates, to_run_config
    from replayml.data.load import date_range
    from replayml.model.fit import lgb_params

    cfg = to_run_config(compose(PROJECT / "conf", []))
    first, last = date_range(cfg.data, PROJECT)
    w = resolve_dates(cfg.dates, first, last)
    if w.valid.start != w.valid.end or w.test.start != w.test.end:
        raise RuntimeError("bench_train expects one validation day and one test day")
    problems = []
    if lgb_params(cfg.model) != peer_train.LGB_PARAMS:
        problems.append(
            f"peer/bare LightGBM params differ from lgb_params(default): "
            f"{peer_train.LGB_PARAMS} != {lgb_params(cfg.model)}"
        )
    if (
        cfg.model.num_boost_round,
        cfg.model.early_stopping_rounds,
    ) != (peer_train.NUM_BOOST_ROUND, peer_train.EARLY_STOPPING_ROUNDS):
        problems.append("peer rounds / early stopping differ from the default config")
    windows = Windows(
        w.train.start.isoformat(),
        w.train.end.isoformat(),
        w.valid.start.isoformat(),
        w.test.start.isoformat(),
    )
    return windows, problems


def _phases(stdout: str) -> dict[str, float]:
    for line in stdout.splitlines():
        if line.startswith("PHASES "):
            return json.loads(line.removeprefix("PHASES "))
    raise RuntimeError(f"no PHASES line in the output:\n{stdout[-2000:]}")


def run(opts: Options) -> Report:
    """Run the three contenders `opts.repeats` times each, interleaved."""
    windows, problems = default_windows_and_params_check()
    if problems:
        raise RuntimeError("; ".join(problems))
    wall: dict[str, list[float]] = defaultdict(list)
    steps: dict[str, list[float]] = defaultdict(list)
    peer_phases: dict[str, list[float]] = defaultdict(list)
    bare_phases: dict[str, list[float]] = defaultdict(list)
    matrix_phases: dict[str, list[float]] = defaultdict(list)
    iters: list[tuple[int, int]] = []
    best_iteration: int | None = None
    names = ["train.py", "peer_train.py", "bare_train.py", CACHED, "bare_matrix_train.py"]
    rounds_ran: dict[str, int] = {}
    with temp_dir("train") as tmp:
        features = tmp / "features"
        progress("train: building the default config's feature matrices once")
        run_checked(
            [
                PYTHON,
                "-m",
                "replayml",
                "features",
                "--params",
                "params.yaml",
                "--out",
                str(features),
            ],
            cwd=PROJECT,
            env=child_env(sqlite_uri(tmp / "unused.db")),
            what="replayml features",
        )
        stores = StoreFactory(tmp / "stores")
        for r in range(opts.repeats):
            # train.py first: bare trains for train.py's best iteration
            order = ["train.py", *rotated(names[1:], r)]
            for name in order:
                progress(f"train: repeat {r + 1}/{opts.repeats}: {name}")
                folder = stores.new(re.sub(r"\W+", "-", name.removesuffix(".py")).strip("-"))
                uri = sqlite_uri(folder / "mlflow.db")
                env = child_env(uri)
                if name in ("train.py", CACHED):
                    cmd = [
                        PYTHON,
                        "train.py",
                        f"tracking.uri={uri}",
                        f"output_dir={folder / 'out'}",
                        f"hydra.run.dir={folder / 'hydra'}",
                    ]
                    if name == CACHED:
                        cmd.append(f"features_dir={features}")
                    seconds, proc = timed(cmd, cwd=PROJECT, env=env, what=name)
                    log = proc.stderr + proc.stdout
                    m = TRAINED_LINE.search(log)
                    if m is None:
                        raise RuntimeError(f"{name} logged no 'trained N iterations' line")
                    rounds_ran[name] = int(m["iters"])
                    if name == CACHED:
                        wall[name].append(seconds)
                        continue
                    found = {m["step"]: float(m["secs"]) for m in STEP_LINE.finditer(log)}
                    for step, value in found.items():
                        steps[step].append(value)
                    steps[OTHER].append(seconds - sum(found.values()))
                    metrics = json.loads((folder / "out" / "metrics.json").read_text())
                    best_iteration = int(metrics["best_iteration"])
                    iters.append((rounds_ran[name], int(m["best"])))
                elif name == "peer_train.py":
                    cmd = [PYTHON, str(BENCH_DIR / name), *windows.args()]
                    seconds, proc = timed(cmd, cwd=folder, env=env, what=name)
                    for key, value in _phases(proc.stdout).items():
                        peer_phases[key].append(float(value))
                elif name == "bare_matrix_train.py":
                    cmd = [
                        PYTHON,
                        str(BENCH_DIR / name),
                        "--features",
                        str(features),
                        "--rounds",
                        str(rounds_ran["train.py"]),
                    ]
                    seconds, proc = timed(cmd, cwd=folder, env=env, what=name)
                    for key, value in _phases(proc.stdout).items():
                        matrix_phases[key].append(float(value))
                else:
                    assert best_iteration is not None
                    cmd = [
                        PYTHON,
                        str(BENCH_DIR / name),
                        *windows.args(),
                        "--rounds",
                        str(best_iteration),
                    ]
                    seconds, proc = timed(cmd, cwd=folder, env=env, what=name)
                    for key, value in _phases(proc.stdout).items():
                        bare_phases[key].append(float(value))
                wall[name].append(seconds)
        if rounds_ran.get(CACHED) != rounds_ran.get("train.py"):
            raise RuntimeError(
                f"train.py ran {rounds_ran.get('train.py')} rounds from the data and "
                f"{rounds_ran.get(CACHED)} from the cached matrices: not the same work"
            )
    return _report(opts, windows, wall, steps, peer_phases, bare_phases, matrix_phases, iters)


def _report(
    opts: Options,
    windows: Windows,
    wall: dict[str, list[float]],
    steps: dict[str, list[float]],
    peer_phases: dict[str, list[float]],
    bare_phases: dict[str, list[float]],
    matrix_phases: dict[str, list[float]],
    iters: list[tuple[int, int]],
) -> Report:
    ours = median(wall["train.py"])
    peer = median(wall["peer_train.py"])
    bare = median(wall["bare_train.py"])
    cached = median(wall[CACHED])
    floor = median(wall["bare_matrix_train.py"])
    rows = [
        [
            "`python train.py` (default config)",
            secs(ours),
            ratio(ours / peer),
            ratio(ours / bare),
            samples_cell(wall["train.py"]),
        ],
        [
            "peer script (pandas + groupby features + autolog)",
            secs(peer),
            ratio(1.0),
            ratio(peer / bare),
            samples_cell(wall["peer_train.py"]),
        ],
        [
            "bare script (raw columns, no tracking)",
            secs(bare),
            ratio(bare / peer),
            ratio(1.0),
            samples_cell(wall["bare_train.py"]),
        ],
        [
            "`python train.py features_dir=...` (cached matrices, as the DVC train stage)",
            secs(cached),
            ratio(cached / peer),
            ratio(cached / bare),
            samples_cell(wall[CACHED]),
        ],
        [
            "bare script on the same matrices (read + `lgb.train`, same rounds)",
            secs(floor),
            ratio(floor / peer),
            ratio(floor / bare),
            samples_cell(wall["bare_matrix_train.py"]),
        ],
    ]
    main = table(
        ["contender", "median wall", "vs peer", "vs bare", "samples (s)"],
        rows,
    )
    step_rows = [
        [step, secs(median(values)), f"{median(values) / ours:.0%}"]
        for step, values in steps.items()
    ]
    step_table = table(["train.py step (from its log)", "median", "share of wall"], step_rows)
    phase_rows = (
        [
            [f"peer: {k}", secs(median(v))]
            for k, v in peer_phases.items()
            if k not in ("iterations", "best_iteration", "rows_train")
        ]
        + [
            [f"bare: {k}", secs(median(v))]
            for k, v in bare_phases.items()
            if k not in ("iterations", "rows_train")
        ]
        + [
            [f"bare on the matrices: {k}", secs(median(v))]
            for k, v in matrix_phases.items()
            if k not in ("iterations", "rows_train")
        ]
    )
    phase_table = table(["baseline phase (self-timed)", "median"], phase_rows)
    our_best = ", ".join(str(b) for _, b in iters) or "n/a"
    notes = (
        f"Windows (default config): train {windows.train_start}..{windows.train_end}, "
        f"valid {windows.valid_day}, test {windows.test_day}; train.py also reads the "
        f"28-day feature history before the training window. Repeats: {opts.repeats}, "
        f"interleaved (train.py first, then the others in rotating order); every command gets "
        f"its own copy of an already-initialised temporary SQLite store.\n\n"
        f"Best iteration: train.py {our_best}, peer "
        f"{_int_median(peer_phases, 'best_iteration')}; both train "
        f"{peer_train.EARLY_STOPPING_ROUNDS} more rounds before "
        f"early stopping ends them (the model keeps the trees up to the best iteration; "
        f"train.py ran {', '.join(str(n) for n, _ in iters) or 'n/a'} rounds). Bare trains "
        f"exactly "
        f"{_int_median(bare_phases, 'iterations')} rounds. Training rows: peer and bare "
        f"{_int_median(peer_phases, 'rows_train')} (train.py drops duplicates and bots first)."
        f"\n\nSame work: the default config's feature matrices are built once "
        f"(`python -m replayml features`); `train.py features_dir=...` trains on them with its "
        f"whole record (validation curves, metrics, plots, model, lineage), and the bare "
        f"script reads the same train and test matrices "
        f"({_int_median(matrix_phases, 'rows_train')} training rows) and trains exactly "
        f"{_int_median(matrix_phases, 'iterations')} rounds, train.py's count, with the same "
        f"parameters: the difference between the two is replayml's cost over the floor."
    )
    checks = [
        Check(
            NAME,
            "train.py wall time vs peer script",
            f"≤ {PEER_TARGET:.2f}×",
            f"{ratio(ours / peer)} ({secs(ours)} vs {secs(peer)})",
            ours / peer <= PEER_TARGET,
        ),
        Check(
            NAME,
            "train.py wall time vs bare script",
            f"≤ {BARE_TARGET:.2f}×",
            f"{ratio(ours / bare)} ({secs(ours)} vs {secs(bare)})",
            ours / bare <= BARE_TARGET,
        ),
        Check(
            NAME,
            "train.py on cached matrices vs bare on the same matrices (same work)",
            f"≤ {BARE_TARGET:.2f}×",
            f"{ratio(cached / floor)} ({secs(cached)} vs {secs(floor)})",
            cached / floor <= BARE_TARGET,
        ),
    ]
    return Report(
        "1. Training: `python train.py` vs peer and bare scripts",
        [main, step_table, phase_table, notes],
        checks,
    )


def _int_median(phases: dict[str, list[float]], key: str) -> str:
    return str(int(median(phases[key]))) if phases.get(key) else "n/a"


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_train.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    require_data()
    print(run(Options(repeats=args.repeats)).markdown())


if __name__ == "__main__":
    sys.exit(main())
