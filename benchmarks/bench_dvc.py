"""Benchmark 7: the DVC pipeline (`dvc.yaml`): a no-op `dvc repro`, and the train stage alone
vs the same `python train.py` command without DVC.

Everything runs in a throwaway clone of the project (`_clone.py`) with a private copy of the DVC
cache. Set-up: one full `dvc repro` (both stages; timed for information). (a) `dvc repro` with
nothing changed, NOOP_SAMPLES samples per repeat, interleaved with `dvc --version` (CLI start)
and `dvc status` (the same change checks, no repro machinery) as reference rows; target: median
at most 1.0 s. (b) `dvc repro -f -s train` (the train stage alone, features cached: without
`-s`, `-f` forces every stage upstream of `train` too) vs the stage's command run directly,
`python train.py --config-dir . --config-name params hydra.output_subdir=null
features_dir=artifacts/features output_dir=<tmp>`: the same work, target at most 1.10x; plain
`python train.py` (features built in the run) as a reference. Interleaved, rotating order; each
training command gets its own copy of an initialised temporary SQLite store.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from _clone import VENV_BIN, Clone, compile_bytecode, make_clone, steps_of
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
    samples_cell,
    secs,
    sqlite_uri,
    table,
    temp_dir,
    timed,
)

NAME = "dvc"
NOOP_TARGET = 1.0
STAGE_TARGET = 1.10
NOOP_SAMPLES = 3
NOOP = "`dvc repro` (nothing changed)"
PYC = "`dvc repro` (nothing changed), bytecode compiled (reference)"
VERSION = "`dvc --version` (reference: CLI start)"
STATUS = "`dvc status` (reference: change checks only)"
STAGE = "`dvc repro -f -s train`"
DIRECT = "`python train.py --config-dir . --config-name params ... features_dir=...`"
PLAIN = "`python train.py` (reference: builds its features)"
SHORT = {STAGE: "dvc repro -f -s train", DIRECT: "train.py (stage cmd)", PLAIN: "plain train.py"}
OTHER = "other (interpreter, imports, DVC, scoring, plots, artifacts)"


def _dvc(clone: Clone, uri: str, *args: str, pycache: Path | None = None) -> tuple[float, str]:
    seconds, proc = timed(
        [str(VENV_BIN / "dvc"), *args],
        cwd=clone.root,
        env=clone.env(uri, pycache),
        what=f"dvc {' '.join(args)}",
    )
    return seconds, proc.stdout + proc.stderr


def _train_cmd(name: str, out: str, hydra_dir: str) -> list[str]:
    if name == STAGE:
        return [str(VENV_BIN / "dvc"), "repro", "-f", "-s", "train"]
    if name == DIRECT:
        return [
            PYTHON,
            "train.py",
            "--config-dir",
            ".",
            "--config-name",
            "params",
            "hydra.output_subdir=null",
            "features_dir=artifacts/features",
            f"output_dir={out}",
        ]
    return [PYTHON, "train.py", f"output_dir={out}", f"hydra.run.dir={hydra_dir}"]


def run(opts: Options) -> Report:
    """Full repro once, then per repeat: no-op samples, then the three training commands."""
    wall: dict[str, list[float]] = defaultdict(list)
    steps: dict[str, dict[str, list[float]]] = {
        k: defaultdict(list) for k in (STAGE, DIRECT, PLAIN)
    }
    with temp_dir(NAME) as tmp:
        clone = make_clone(tmp)
        pycache = tmp / "pycache"
        compile_bytecode(pycache)
        stores = StoreFactory(tmp / "stores")
        folder = stores.new("full-repro")
        progress(f"{NAME}: set-up: full dvc repro")
        full, log = _dvc(clone, sqlite_uri(folder / "mlflow.db"), "repro")
        ran = [s for s in ("features", "train") if f"Running stage '{s}'" in log]
        for r in range(opts.repeats):
            progress(f"{NAME}: repeat {r + 1}/{opts.repeats}: no-op dvc repro ({NOOP_SAMPLES}×)")
            for k in range(NOOP_SAMPLES):
                for name in rotated([NOOP, PYC, VERSION, STATUS], r * NOOP_SAMPLES + k):
                    args = {VERSION: ["--version"], STATUS: ["status"]}.get(name, ["repro"])
                    pyc = pycache if name == PYC else None
                    seconds, log = _dvc(clone, "", *args, pycache=pyc)
                    if name != VERSION and ("Running stage" in log or "up to date" not in log):
                        raise RuntimeError(f"`dvc {args[0]}` was not a no-op:\n{log[-3000:]}")
                    wall[name].append(seconds)
            for name in rotated([STAGE, DIRECT, PLAIN], r):
                progress(f"{NAME}: repeat {r + 1}/{opts.repeats}: {name}")
                folder = stores.new(name.split()[0].strip("`"))
                uri = sqlite_uri(folder / "mlflow.db")
                cmd = _train_cmd(name, str(folder / "out"), str(folder / "hydra"))
                seconds, proc = timed(cmd, cwd=clone.root, env=clone.env(uri), what=name)
                log = proc.stdout + proc.stderr
                if name == STAGE and (
                    "Running stage 'train'" not in log or "Running stage 'features'" in log
                ):
                    raise RuntimeError(f"{name} did not run the train stage alone:\n{log[-3000:]}")
                wall[name].append(seconds)
                found = steps_of(log)
                for step, value in found.items():
                    steps[name][step].append(value)
                steps[name][OTHER].append(seconds - sum(found.values()))
    return _report(opts, wall, steps, full, ran)


def _report(
    opts: Options,
    wall: dict[str, list[float]],
    steps: dict[str, dict[str, list[float]]],
    full: float,
    ran: list[str],
) -> Report:
    noop = median(wall[NOOP])
    noop_rows = [
        [
            name,
            secs(median(wall[name])),
            ratio(median(wall[name]) / noop),
            samples_cell(wall[name]),
        ]
        for name in (NOOP, PYC, VERSION, STATUS)
    ]
    noop_table = table(["command", "median wall", "vs no-op repro", "samples (s)"], noop_rows)
    stage, direct, plain = (median(wall[n]) for n in (STAGE, DIRECT, PLAIN))
    stage_rows = [
        [
            name,
            secs(median(wall[name])),
            ratio(median(wall[name]) / direct),
            samples_cell(wall[name]),
        ]
        for name in (STAGE, DIRECT, PLAIN)
    ]
    stage_table = table(["command", "median wall", "vs direct", "samples (s)"], stage_rows)
    step_rows = []
    for name in (STAGE, DIRECT, PLAIN):
        total = median(wall[name])
        for step, values in steps[name].items():
            step_rows.append(
                [SHORT[name], step, secs(median(values)), f"{median(values) / total:.0%}"]
            )
    step_table = table(
        ["command", "step (from train.py's log)", "median", "share of wall"], step_rows
    )
    notes = (
        f"Throwaway clone, private copy of the DVC cache and DVC site cache (kept across the "
        f"run, as a user's is). Set-up `dvc repro` ran {', '.join(ran) or 'no stage'} in "
        f"{secs(full)}. (a) {NOOP_SAMPLES} samples per repeat × {opts.repeats} repeat(s), "
        f"each checked to run no stage. (b) {opts.repeats} sample(s) each, rotating order; "
        f"each output checked to run the train stage and not the features stage. The direct "
        f"command is the stage's `cmd` with output_dir in the temporary folder and Hydra's "
        f"run folder left at its default; all three track into $MLFLOW_TRACKING_URI (a fresh "
        f"copy of an initialised store each). DVC's own cost in (b) ≈ "
        f"{stage - direct:+.2f} s (median difference: CLI start, hashing dependencies and "
        f"outputs, caching `model.txt`, writing dvc.lock).\n\n"
        f"Bytecode: `make install` compiles the venv (`uv sync --compile-bytecode`); the "
        f"reference row runs the same commands reading bytecode compiled once into a private "
        f"PYTHONPYCACHEPREFIX, which also covers the standard library and a venv installed "
        f"without compiling."
    )
    checks = [
        Check(
            NAME,
            "(a) no-op `dvc repro` (after a full repro)",
            f"≤ {NOOP_TARGET:.1f} s",
            f"{secs(noop)} (bytecode compiled: {secs(median(wall[PYC]))}; `dvc status` "
            f"{secs(median(wall[STATUS]))}, `dvc --version` {secs(median(wall[VERSION]))})",
            noop <= NOOP_TARGET,
        ),
        Check(
            NAME,
            "(b) `dvc repro -f -s train` vs the same train.py command",
            f"≤ {STAGE_TARGET:.2f}×",
            f"{ratio(stage / direct)} ({secs(stage)} vs {secs(direct)})",
            stage / direct <= STAGE_TARGET,
        ),
        Check(
            NAME,
            "(b) `dvc repro -f -s train` vs plain `python train.py`",
            "none (info)",
            f"{ratio(stage / plain)} ({secs(stage)} vs {secs(plain)})",
            None,
        ),
    ]
    return Report(
        "7. DVC pipeline: no-op `dvc repro`; the train stage vs its command",
        [noop_table, stage_table, step_table, notes],
        checks,
    )


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_dvc.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    require_data()
    print(run(Options(repeats=args.repeats)).markdown())


if __name__ == "__main__":
    sys.exit(main())
