"""Bare baseline: read the same days of Parquet and `lgb.train` on the raw numeric columns.

No features, no validation set, no tracking: the floor for "read the data and train a model
with the same parameters for the same number of rounds" (`--rounds`, train.py's best
iteration). Prints one `PHASES {...}` JSON line with its phase timings on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import pandas as pd
from peer_train import LGB_PARAMS, read_days

RAW_COLUMNS = ["user_id", "item_id", "position", "click"]


def main() -> None:
    """Read the window, train on the training days, score the test day."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train-start", type=date.fromisoformat, required=True)
    parser.add_argument("--train-end", type=date.fromisoformat, required=True)
    parser.add_argument("--valid-day", type=date.fromisoformat, required=True)
    parser.add_argument("--test-day", type=date.fromisoformat, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()

    import lightgbm as lgb

    t_import = time.perf_counter()
    events = read_days(args.data / "events", args.train_start, args.test_day)
    t_read = time.perf_counter()
    train = events[events["ts"] < pd.Timestamp(args.valid_day)]
    test = events[events["ts"] >= pd.Timestamp(args.test_day)]
    booster = lgb.train(
        LGB_PARAMS,
        lgb.Dataset(train[RAW_COLUMNS], label=train["contact"]),
        num_boost_round=args.rounds,
    )
    t_train = time.perf_counter()
    booster.predict(test[RAW_COLUMNS])
    print_phases([t0, t_import, t_read, t_train, time.perf_counter()], booster, len(train))


def print_phases(marks: list[float], booster: object, rows_train: int) -> None:
    """The `PHASES {...}` line bench_train.py reads: seconds between the marks taken at the
    start, after the imports, the read, the training and the scoring."""
    names = ("imports", "reading", "training", "scoring")
    steps = zip(names, marks[:-1], marks[1:], strict=True)
    phases: dict[str, float] = {name: end - start for name, start, end in steps}
    phases["iterations"] = booster.current_iteration()  # type: ignore[attr-defined]
    phases["rows_train"] = rows_train
    print("PHASES " + json.dumps(phases))


if __name__ == "__main__":
    main()
