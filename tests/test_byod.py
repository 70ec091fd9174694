"""Bring your own data: another dataset, other column names, one CSV file, no attribute tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import all_runs, dvc, git, run_train_py

pytestmark = pytest.mark.slow

SHOP_CONF = """\
# A shop's click log: one CSV file, its own column names, no item or user tables.
name: shop
root: data
dvc_file: data.dvc
events:
  path: shop/events.csv
  user: visitor
  item: product
  timestamp: seen_at
  label: bought
items:
  path: null
users:
  path: null
"""


def _shop_events(n_days: int = 30, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:04d}" for i in range(400)])
    quality = rng.beta(1, 12, size=120)
    n = 20_000
    day = rng.integers(0, n_days, size=n)
    item = rng.zipf(1.6, size=n) % 120
    ts = (
        pd.Timestamp("2025-01-01")
        + pd.to_timedelta(day, "D")
        + pd.to_timedelta(rng.integers(0, 86_400, size=n), "s")
    )
    frame = pd.DataFrame(
        {
            "visitor": rng.choice(users, size=n),
            "product": item,
            "seen_at": ts,
            "bought": (rng.random(n) < quality[item]).astype(int),
        }  # fmt: skip
    )
    return frame.sort_values("seen_at", kind="mergesort", ignore_index=True)


def test_a_new_dataset_trains_through_the_same_entry(project: Path) -> None:
    (project / "data" / "shop").mkdir()
    _shop_events().to_csv(project / "data" / "shop" / "events.csv", index=False)
    (project / "conf" / "data" / "shop.yaml").write_text(SHOP_CONF)
    dvc(project, "add", "-q", "data")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "add the shop dataset")
    args = ["data=shop", "features=minimal", "preprocessing=none", "dates=last_7d"]
    proc = run_train_py(project, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    tags = run.data.tags
    assert tags["replayml.dataset"] == "shop"
    assert tags["replayml.dates.test_end"] == "2025-01-30"
    assert run.data.metrics["test_auc"] > 0.55  # item quality is learnable from history
    # the default builders need item columns this dataset does not have: a clear error
    bad = run_train_py(project, "data=shop", "dates=last_7d")
    assert bad.returncode == 2
    assert "needs items column(s)" in bad.stderr and "features=minimal" in bad.stderr


def test_a_missing_mapped_column_is_named(project: Path) -> None:
    (project / "data" / "shop").mkdir()
    _shop_events().rename(columns={"bought": "purchased"}).to_csv(
        project / "data" / "shop" / "events.csv", index=False
    )
    (project / "conf" / "data" / "shop.yaml").write_text(SHOP_CONF)
    dvc(project, "add", "-q", "data")
    proc = run_train_py(project, "data=shop", "features=minimal", "dates=last_7d")
    assert proc.returncode == 2
    assert "no column 'bought' (data.events.label=bought)" in proc.stderr
    assert "purchased" in proc.stderr
    assert all_runs(project) == []
