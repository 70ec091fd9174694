"""Benchmark 4: `replayml.data.load.load` of a 7-day window vs all days, vs bare pandas.

In-process, interleaved, after one untimed warm-up of each contender; short windows load in
milliseconds, so each repeat takes SAMPLES_PER_REPEAT samples of every contender. `load` reads
only the partitions of the window, so its time should follow the window: the 7d/all time ratio
near the rows ratio. A one-day load shows the fixed cost of a call. Target: the time ratio is
at most sqrt(1 / rows ratio) times the rows ratio, the geometric midpoint between exactly
proportional (1x) and a loader that reads everything and filters afterwards (1 / rows ratio).
"""

from __future__ import annotations

import gc
import math
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

from _common import (
    DATA,
    PROJECT,
    Check,
    Options,
    Report,
    median,
    parse_options,
    progress,
    ratio,
    require_data,
    rotated,
    samples_cell,
    secs,
    set_process_env,
    table,
)

NAME = "load"
WINDOW_DAYS = 7
SAMPLES_PER_REPEAT = 5


def run(opts: Options) -> Report:
    """Time the three loads, interleaved; compare time and row ratios."""
    set_process_env()
    import pandas as pd

    from replayml.config.compose import compose
    from replayml.config.resolve import to_run_config
    from replayml.data.load import date_range, load

    cfg = to_run_config(compose(PROJECT / "conf", []))
    first, last = date_range(cfg.data, PROJECT)
    start_7d = last - timedelta(days=WINDOW_DAYS - 1)
    all_days = (last - first).days + 1
    one = f"`load` last day ({last}), fixed cost"
    small = f"`load` last {WINDOW_DAYS} days ({start_7d}..{last})"
    full = f"`load` all {all_days} days ({first}..{last})"
    bare = "`pandas.read_parquet('data/events')` (baseline)"

    def load_one() -> int:
        return len(load(cfg.data, PROJECT, last, last).events)

    def load_small() -> int:
        return len(load(cfg.data, PROJECT, start_7d, last).events)

    def load_full() -> int:
        return len(load(cfg.data, PROJECT, first, last).events)

    def read_bare() -> int:
        return len(pd.read_parquet(DATA / "events"))

    contenders: dict[str, Callable[[], int]] = {
        one: load_one,
        small: load_small,
        full: load_full,
        bare: read_bare,
    }
    rows_read = {name: fn() for name, fn in contenders.items()}  # warm-up, untimed
    wall: dict[str, list[float]] = defaultdict(list)
    for r in range(opts.repeats):
        progress(f"load: repeat {r + 1}/{opts.repeats}")
        for s in range(SAMPLES_PER_REPEAT):
            for name in rotated(list(contenders), r * SAMPLES_PER_REPEAT + s):
                gc.collect()
                start = time.perf_counter()
                n = contenders[name]()
                wall[name].append(time.perf_counter() - start)
                if n != rows_read[name]:
                    raise RuntimeError(f"{name} returned {rows_read[name]} rows, then {n}")
    base = median(wall[bare])
    rows = [
        [
            name,
            f"{rows_read[name]:,}",
            secs(median(wall[name])),
            ratio(median(wall[name]) / base),
            f"{median(wall[name]) / rows_read[name] * 1e6:.2f} s",
            samples_cell(wall[name]),
        ]
        for name in contenders
    ]
    time_ratio = median(wall[small]) / median(wall[full])
    rows_ratio = rows_read[small] / rows_read[full]
    factor = math.sqrt(1 / rows_ratio)
    notes = (
        f"{opts.repeats} repeat(s) × {SAMPLES_PER_REPEAT} samples, in-process, interleaved, "
        f"after one untimed warm-up each "
        f"(files are in the OS cache). `load` also reads and checks the item and user tables "
        f"and converts columns to the canonical names and dtypes. 7d/all time ratio "
        f"{time_ratio:.3f} vs rows ratio {rows_ratio:.3f}: "
        f"{time_ratio / rows_ratio:.2f}× (1.00× = time exactly proportional to rows; a loader "
        f"that read every partition and filtered afterwards would be near {1 / rows_ratio:.1f}×). "
        f"The one-day load ({secs(median(wall[one]))}) is mostly the fixed cost of a call: "
        f"item and user tables, dataset discovery, schema checks."
    )
    check = Check(
        NAME,
        f"{WINDOW_DAYS}d/{all_days}d load time ratio vs rows ratio",
        f"≤ {factor:.1f}× rows ratio",
        f"{time_ratio:.3f} vs {rows_ratio:.3f} ({time_ratio / rows_ratio:.2f}×)",
        time_ratio <= factor * rows_ratio,
    )
    return Report(
        "4. Loading: a 7-day window vs all days",
        [
            table(
                ["contender", "rows", "median", "vs pandas", "per M rows", "samples (s)"],
                rows,
            ),
            notes,
        ],
        [check],
    )


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_load.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    require_data()
    print(run(Options(repeats=args.repeats)).markdown())


if __name__ == "__main__":
    main()
