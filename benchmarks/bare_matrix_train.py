"""Bare baseline on train.py's own matrices: read them and `lgb.train`, nothing else.

The cached feature matrices of the default config (`replayml features`, the DVC `features`
stage's output) are what `python train.py features_dir=...` trains on. This script reads the
same Parquet files and trains with the same LightGBM parameters for exactly the rounds that
train.py ran (`--rounds`), without validation curves, tracking or lineage, then scores the test
matrix: the floor for producing the same model from the same matrices. Prints one
`PHASES {...}` JSON line with its phase timings on stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from bare_train import print_phases
from peer_train import LGB_PARAMS

LABEL = "__label"


def main() -> None:
    """Read the train and test matrices, train, score the test matrix."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()

    import lightgbm as lgb

    t_import = time.perf_counter()
    train = pd.read_parquet(args.features / "train.parquet")
    test = pd.read_parquet(args.features / "test.parquet")
    columns = [c for c in train.columns if not c.startswith("__")]
    t_read = time.perf_counter()
    booster = lgb.train(
        LGB_PARAMS,
        lgb.Dataset(train[columns], label=train[LABEL]),
        num_boost_round=args.rounds,
    )
    t_train = time.perf_counter()
    booster.predict(test[columns])
    print_phases([t0, t_import, t_read, t_train, time.perf_counter()], booster, len(train))


if __name__ == "__main__":
    main()
