"""Benchmark 2: start-up time of `python train.py --help`, with import references.

Short commands are noisy, so each repeat takes SAMPLES_PER_REPEAT samples of every command,
interleaved, after one untimed warm-up of each. Target: median <= 0.6 s.
"""

from __future__ import annotations

import re
from collections import defaultdict

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
    samples_cell,
    secs,
    sqlite_uri,
    table,
    temp_dir,
    timed,
)

NAME = "startup"
TARGET = 0.6
SAMPLES_PER_REPEAT = 3
BASELINE = 'python -c "import mlflow"'
COMMANDS: dict[str, list[str]] = {
    "python train.py --help": [PYTHON, "train.py", "--help"],
    BASELINE: [PYTHON, "-c", "import mlflow"],
    'python -c "import lightgbm"': [PYTHON, "-c", "import lightgbm"],
    'python -c "pass" (interpreter floor)': [PYTHON, "-c", "pass"],
}

#: what `--help` must not import: each costs a second or more on this kind of machine
HEAVY = ("mlflow", "lightgbm", "pandas", "pyarrow", "sklearn", "matplotlib", "dvc", "numpy")
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(?P<cum>\d+) \| (?P<name> *\S+)$", re.M)


def imported_modules(stderr: str) -> dict[str, float]:
    """Every module `-X importtime` reports, with its cumulative seconds; top-level modules
    (imported directly by the script, not by another module) keep no leading spaces."""
    return {m["name"]: int(m["cum"]) / 1e6 for m in IMPORT_LINE.finditer(stderr)}


def run(opts: Options) -> Report:
    """Time every command, interleaved, and compare `train.py --help` with the target."""
    wall: dict[str, list[float]] = defaultdict(list)
    names = list(COMMANDS)
    with temp_dir("startup") as tmp:
        env = child_env(sqlite_uri(tmp / "mlflow.db"))  # nothing here should touch it
        for name in names:
            timed(COMMANDS[name], cwd=PROJECT, env=env, what=f"warm-up of {name}")
        _, proc = timed(
            [PYTHON, "-X", "importtime", "train.py", "--help"],
            cwd=PROJECT,
            env=env,
            what="train.py --help with -X importtime",
        )
        imports = imported_modules(proc.stderr)
        for r in range(opts.repeats):
            progress(f"startup: repeat {r + 1}/{opts.repeats}")
            for s in range(SAMPLES_PER_REPEAT):
                for name in rotated(names, r * SAMPLES_PER_REPEAT + s):
                    seconds, _ = timed(COMMANDS[name], cwd=PROJECT, env=env, what=name)
                    wall[name].append(seconds)
        leftovers = sorted(p.name for p in tmp.iterdir())
    base = median(wall[BASELINE])
    rows = [
        [
            f"`{name}`" + (" (baseline)" if name == BASELINE else ""),
            secs(median(wall[name])),
            ratio(median(wall[name]) / base),
            samples_cell(wall[name]),
        ]
        for name in names
    ]
    ours = median(wall["python train.py --help"])
    notes = (
        f"{opts.repeats} repeat(s) × {SAMPLES_PER_REPEAT} samples per command, interleaved, "
        f"after one untimed warm-up each. `train.py --help` composes the config with Hydra "
        f"and must not import mlflow, lightgbm or pandas."
    )
    heavy = sorted({m.strip().split(".")[0] for m in imports} & set(HEAVY))
    top = {m: t for m, t in imports.items() if not m.startswith(" ")}
    slowest = sorted(top.items(), key=lambda kv: -kv[1])[:3]
    notes += (
        " Slowest top-level imports of `--help` (`-X importtime`, cumulative): "
        + ", ".join(f"{name} {secs(t)}" for name, t in slowest)
        + f"; all imports {secs(sum(top.values()))}."
    )
    if leftovers:
        notes += f" Unexpected files in the temporary store folder: {leftovers}."
    checks = [
        Check(
            NAME,
            "`python train.py --help` wall time",
            f"≤ {TARGET:.2f} s",
            f"{secs(ours)} ({ratio(ours / base)} of `import mlflow`)",
            ours <= TARGET,
        ),
        Check(
            NAME,
            "`--help` imports no heavy package",
            "none of " + "/".join(HEAVY[:3]) + "/…",
            ", ".join(heavy) if heavy else "none",
            not heavy,
        ),
    ]
    return Report(
        "2. Start-up: `python train.py --help`",
        [table(["command", "median wall", "vs `import mlflow`", "samples (s)"], rows), notes],
        checks,
    )


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_startup.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    require_data()
    print(run(Options(repeats=args.repeats)).markdown())


if __name__ == "__main__":
    main()
