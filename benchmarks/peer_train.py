"""Peer baseline: a training script the way a typical team writes one, without replayml.

pandas reads the train/valid/test days plus the item and user tables; a few groupby features
(each item's and user's impressions, click and contact rate of the day before) are joined in;
`mlflow.lightgbm.autolog()` runs with its defaults, and `lgb.train` uses the same LightGBM
parameters as replayml's default config (bench_train.py checks them against
`replayml.model.fit.lgb_params`) with early stopping on the validation day. The only change:
a built-in metric (logloss first, then AUC), since early stopping needs one.

Run from a temporary folder with MLFLOW_TRACKING_URI pointing at a temporary store; prints one
`PHASES {...}` JSON line with its own phase timings on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

#: Equal to `lgb_params(ModelConfig())` of the default config (bench_train.py verifies this).
LGB_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 1.0,
    "bagging_freq": 0,
    "lambda_l2": 1.0,
    "max_bin": 255,
    "seed": 42,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "metric": "None",
    "verbosity": -1,
}
NUM_BOOST_ROUND = 400
EARLY_STOPPING_ROUNDS = 30
#: early stopping needs a built-in metric; the first one (logloss) decides, as in replayml
PEER_METRICS = ["binary_logloss", "auc"]
FEATURES = [
    "position",
    "price",
    "item_age_days",
    "hour",
    "region_match",
    "category_code",
    "item_imps_prev_day",
    "item_ctr_prev_day",
    "item_cr_prev_day",
    "user_imps_prev_day",
    "user_ctr_prev_day",
    "user_cr_prev_day",
]


def read_days(events_dir: Path, start: date, end: date) -> pd.DataFrame:
    """All event partitions of [start, end], concatenated."""
    frames = []
    day = start
    while day <= end:
        frames.append(pd.read_parquet(events_dir / f"date={day.isoformat()}"))
        day += timedelta(days=1)
    return pd.concat(frames, ignore_index=True)


def previous_day_stats(df: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    """Impressions, click rate and contact rate of each key on the day before."""
    daily = df.groupby([key, "day"], as_index=False).agg(
        **{
            f"{prefix}_imps_prev_day": ("contact", "size"),
            f"{prefix}_ctr_prev_day": ("click", "mean"),
            f"{prefix}_cr_prev_day": ("contact", "mean"),
        }
    )
    daily["day"] = daily["day"] + pd.Timedelta(days=1)
    return daily


def add_features(df: pd.DataFrame) -> pd.DataFrame:
    """Yesterday's item and user statistics plus a few row features."""
    out = df.merge(previous_day_stats(df, "item_id", "item"), on=["item_id", "day"], how="left")
    out = out.merge(previous_day_stats(df, "user_id", "user"), on=["user_id", "day"], how="left")
    out["item_age_days"] = (out["ts"] - out["listed_at"]).dt.days
    out["hour"] = out["ts"].dt.hour
    out["region_match"] = (out["item_region"] == out["user_region"]).astype("int8")
    out["category_code"] = out["category"].astype("category").cat.codes
    return out


def main() -> None:
    """Read, featurise, train with autolog, score the test day."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train-start", type=date.fromisoformat, required=True)
    parser.add_argument("--train-end", type=date.fromisoformat, required=True)
    parser.add_argument("--valid-day", type=date.fromisoformat, required=True)
    parser.add_argument("--test-day", type=date.fromisoformat, required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()

    import lightgbm as lgb
    import mlflow
    from sklearn.metrics import roc_auc_score

    t_import = time.perf_counter()
    events = read_days(args.data / "events", args.train_start, args.test_day)
    items = pd.read_parquet(args.data / "items.parquet").rename(columns={"region": "item_region"})
    users = pd.read_parquet(args.data / "users.parquet").rename(columns={"region": "user_region"})
    t_read = time.perf_counter()

    df = events.merge(items, on="item_id", how="left").merge(
        users[["user_id", "user_region"]], on="user_id", how="left"
    )
    df["day"] = df["ts"].dt.normalize()
    df = add_features(df)
    train = df[df["day"] <= pd.Timestamp(args.train_end)]
    valid = df[df["day"] == pd.Timestamp(args.valid_day)]
    test = df[df["day"] == pd.Timestamp(args.test_day)]
    t_features = time.perf_counter()

    mlflow.set_experiment("peer")
    mlflow.lightgbm.autolog()
    with mlflow.start_run():
        dtrain = lgb.Dataset(train[FEATURES], label=train["contact"])
        dvalid = lgb.Dataset(valid[FEATURES], label=valid["contact"], reference=dtrain)
        booster = lgb.train(
            {**LGB_PARAMS, "metric": PEER_METRICS},
            dtrain,
            num_boost_round=NUM_BOOST_ROUND,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(EARLY_STOPPING_ROUNDS, first_metric_only=True, verbose=False)
            ],
        )
        t_train = time.perf_counter()
        preds = booster.predict(test[FEATURES], num_iteration=booster.best_iteration)
        mlflow.log_metric("test_auc", float(roc_auc_score(test["contact"], preds)))
    t_end = time.perf_counter()
    phases = {
        "imports": t_import - t0,
        "reading": t_read - t_import,
        "features": t_features - t_read,
        "training + autolog": t_train - t_features,
        "scoring + end of run": t_end - t_train,
        "best_iteration": booster.best_iteration,
        "rows_train": len(train),
    }
    print("PHASES " + json.dumps(phases))


if __name__ == "__main__":
    main()
