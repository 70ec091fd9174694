"""Run every benchmark and print one Markdown table per benchmark plus a summary.

`make bench` runs this after `make data`; `ARGS="--quick"` takes one repeat per contender,
`ARGS="--repeats 5"` more, `ARGS="--only startup load"` a subset. Exit status: 0 when every
benchmark ran (targets missed included), 1 when one crashed, 2 when the data is missing.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable

import bench_dvc
import bench_load
import bench_logging
import bench_registry
import bench_replay
import bench_startup
import bench_sweep
import bench_train
from _common import (
    Check,
    Options,
    Report,
    machine,
    parse_options,
    progress,
    require_data,
    set_process_env,
    table,
    verdict,
)

BENCHMARKS: dict[str, tuple[str, Callable[[Options], Report]]] = {
    "train": ("1. Training", bench_train.run),
    "startup": ("2. Start-up", bench_startup.run),
    "logging": ("3. Curve logging", bench_logging.run),
    "load": ("4. Loading", bench_load.run),
    "registry": ("5. Registry and review", bench_registry.run),
    "replay": ("6. Replay", bench_replay.run),
    "dvc": ("7. DVC pipeline", bench_dvc.run),
    "sweep": ("8. Sweeps", bench_sweep.run),
}


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks in order; print their tables and the summary."""
    args = parse_options(argv, __doc__.splitlines()[0])
    selected = args.only or list(BENCHMARKS)
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    require_data()
    set_process_env()
    opts = Options(repeats=args.repeats, quick=args.quick)
    checks: list[Check] = []
    crashed = False
    started = time.perf_counter()
    print(f"# replayml benchmarks ({opts.repeats} repeat(s); medians, ratios in-run)\n")
    print(f"Machine at start: {machine()}.\n", flush=True)
    for name in selected:
        title, bench = BENCHMARKS[name]
        progress(f"{name}: starting")
        before = machine()
        t0 = time.perf_counter()
        try:
            report = bench(opts)
        except Exception as exc:  # one broken benchmark must not hide the others
            crashed = True
            traceback.print_exc()
            checks.append(
                Check(name, title, "runs", f"error: {str(exc).splitlines()[0]}", False, True)
            )
            print(f"## {title}\n\nERROR: {exc}\n", flush=True)
            continue
        progress(f"{name}: done in {time.perf_counter() - t0:.0f} s")
        checks.extend(report.checks)
        report.sections.append(f"_Machine before: {before}; after: {machine()}._")
        print(report.markdown() + "\n", flush=True)
    rows = [[c.benchmark, c.what, c.target, c.measured, verdict(c)] for c in checks]
    print("## Summary\n")
    print(table(["benchmark", "check", "target", "measured", "result"], rows))
    print(f"\nTotal time: {time.perf_counter() - started:.0f} s.")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
