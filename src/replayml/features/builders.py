"""The built-in feature builders. Each row on day D sees only events of days before D.

All builders work on canonical columns and return new columns aligned with `targets`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from replayml.features.registry import FeatureContext, register


def _window_lookup(
    history: pd.DataFrame,
    targets: pd.DataFrame,
    keys: list[str],
    values: list[str],
    lookback: int,
) -> pd.DataFrame:
    """For each target row (day D, keys): sums of `values` and a row count `n` over the
    history rows with the same keys and days in [D - lookback, D - 1].

    Dense per-key cumulative sums over days: one pass over the history, then a lookup per
    target row. Sums of integer outcomes are exact in float64.
    """
    hist_keys = [history[k] for k in keys]
    tgt_keys = [targets[k] for k in keys]
    if len(keys) == 1:
        index = pd.Index(pd.unique(hist_keys[0]))
        hist_code = index.get_indexer(hist_keys[0])
        tgt_code = index.get_indexer(tgt_keys[0])
    else:
        index = pd.MultiIndex.from_arrays(hist_keys).unique()
        hist_code = index.get_indexer(pd.MultiIndex.from_arrays(hist_keys))
        tgt_code = index.get_indexer(pd.MultiIndex.from_arrays(tgt_keys))
    one_day = np.timedelta64(1, "D")
    start = (
        min(history["day"].min(), targets["day"].min()) if len(history) else targets["day"].min()
    )
    hist_day = ((history["day"] - start) / one_day).to_numpy(dtype="int64")
    tgt_day = ((targets["day"] - start) / one_day).to_numpy(dtype="int64")
    n_days = int(max(hist_day.max(initial=0), tgt_day.max(initial=0))) + 1
    n_keys = max(len(index), 1)
    flat = hist_code.astype("int64") * n_days + hist_day
    known = tgt_code >= 0
    row = np.where(known, tgt_code, 0)
    hi = tgt_day  # cumulative column j holds the sum over days < j
    lo = np.maximum(tgt_day - lookback, 0)
    out = pd.DataFrame(index=targets.index)
    for name, weights in [("n", None)] + [(v, history[v].to_numpy("float64")) for v in values]:
        grid = np.bincount(flat, weights=weights, minlength=n_keys * n_days).reshape(
            n_keys, n_days
        )
        cum = np.zeros((n_keys, n_days + 1))
        np.cumsum(grid, axis=1, out=cum[:, 1:])
        out[name] = np.where(known, cum[row, hi] - cum[row, lo], 0.0)
    return out


def _rate(num: pd.Series, den: pd.Series, prior: float, strength: float) -> pd.Series:
    return (num + prior * strength) / (den + strength)


def _target_days(targets: pd.DataFrame) -> np.ndarray:
    return np.sort(targets["day"].unique())


def _join(targets: pd.DataFrame, agg: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return targets[[*keys, "day"]].merge(agg, on=[*keys, "day"], how="left", validate="m:1")


def _global_rates(
    history: pd.DataFrame, values: list[str], days: np.ndarray, lookback: int
) -> pd.DataFrame:
    """Per target day D: the overall rate of each value over days [D - lookback, D - 1]."""
    daily = history.groupby("day", sort=True)[values].agg(["sum", "count"])
    rows = []
    for d in days:
        lo = d - np.timedelta64(lookback, "D")
        win = daily[(daily.index >= lo) & (daily.index < d)]
        rates = {}
        for v in values:
            n = float(win[(v, "count")].sum())
            rates[v] = float(win[(v, "sum")].sum()) / n if n else 0.0
        rows.append({"day": d, **rates})
    return pd.DataFrame(rows, columns=["day", *values])


def _entity_history(
    targets: pd.DataFrame, ctx: FeatureContext, key: str, prefix: str
) -> pd.DataFrame:
    hist = ctx.history
    values = ["label"] + (["click"] if "click" in hist else [])
    out = pd.DataFrame(index=targets.index)
    days = _target_days(targets)
    for w in ctx.lookback_days:
        j = _window_lookup(hist, targets, [key], values, w)
        # the smoothing prior is point-in-time too: the overall rate over the same window
        prior = targets[["day"]].merge(_global_rates(hist, values, days, w), on="day", how="left")
        n = j["n"].fillna(0)
        out[f"{prefix}_imps_{w}d"] = n.to_numpy()
        out[f"{prefix}_contacts_{w}d"] = j["label"].fillna(0).to_numpy()
        out[f"{prefix}_cr_{w}d"] = (
            (j["label"].fillna(0) + prior["label"] * ctx.smoothing) / (n + ctx.smoothing)
        ).to_numpy()
        if "click" in values:
            out[f"{prefix}_ctr_{w}d"] = (
                (j["click"].fillna(0) + prior["click"] * ctx.smoothing) / (n + ctx.smoothing)
            ).to_numpy()
    return out


@register("user_history")
def user_history(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """User impressions, contacts, smoothed contact rate and CTR over each lookback window."""
    return _entity_history(targets, ctx, "user_id", "user")


@register("item_history")
def item_history(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """Item popularity (impressions) and smoothed contact rate / CTR over each lookback."""
    return _entity_history(targets, ctx, "item_id", "item")


def _with_items(frame: pd.DataFrame, items: pd.DataFrame | None, cols: list[str]) -> pd.DataFrame:
    assert items is not None  # guaranteed by the registry's column check
    return frame[["item_id"]].merge(items[["item_id", *cols]], on="item_id", how="left")


@register("user_category_affinity", items=("category",))
def user_category_affinity(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """The user's share of impressions and contacts in the item's category (longest lookback)."""
    w = max(ctx.lookback_days)
    hist = ctx.history.assign(
        category=_with_items(ctx.history, ctx.items, ["category"])["category"].to_numpy()
    )
    tgt = targets.assign(
        category=_with_items(targets, ctx.items, ["category"])["category"].to_numpy()
    )
    jc = _window_lookup(hist, tgt, ["user_id", "category"], ["label"], w)
    ju = _window_lookup(hist, tgt, ["user_id"], ["label"], w)
    s = ctx.smoothing
    n_cats = max(int(ctx.items["category"].nunique()), 1) if ctx.items is not None else 1
    out = pd.DataFrame(index=targets.index)
    out["ucat_imps"] = jc["n"].fillna(0).to_numpy()
    out["ucat_contacts"] = jc["label"].fillna(0).to_numpy()
    out["ucat_imp_share"] = _rate(jc["n"].fillna(0), ju["n"].fillna(0), 1 / n_cats, s).to_numpy()
    out["ucat_contact_share"] = _rate(
        jc["label"].fillna(0), ju["label"].fillna(0), 1 / n_cats, 1.0
    ).to_numpy()
    return out


@register("price_relative", items=("category", "price"))
def price_relative(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """Log price and price relative to its category's median (item attributes are static)."""
    assert ctx.items is not None
    items = ctx.items[["item_id", "category", "price"]]
    med = items.groupby("category", observed=True)["price"].median().rename("cat_median")
    items = items.merge(med, left_on="category", right_index=True, how="left")
    j = _with_items(targets, items, ["price", "cat_median"])
    out = pd.DataFrame(index=targets.index)
    out["log_price"] = np.log1p(j["price"].to_numpy(dtype="float64"))
    out["price_rel_category"] = (j["price"] / j["cat_median"]).to_numpy(dtype="float64")
    return out


@register("listing_age", items=("created",))
def listing_age(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """Days since the listing was created, at the impression's timestamp."""
    j = _with_items(targets, ctx.items, ["created"])
    age = targets["ts"].to_numpy() - j["created"].to_numpy(dtype="datetime64[us]")
    out = pd.DataFrame(index=targets.index)
    out["listing_age_days"] = age / np.timedelta64(1, "D")
    return out


@register("user_recency")
def user_recency(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """Days since the user's last impression and last contact before the target day."""
    hist = ctx.history
    days = _target_days(targets)
    last_seen = (
        hist.groupby(["user_id", "day"], sort=True).size().reset_index()[["user_id", "day"]]
    )
    contacts = hist[hist["label"] > 0][["user_id", "day"]].drop_duplicates()
    out = pd.DataFrame(index=targets.index)
    for name, table in (("days_since_seen", last_seen), ("days_since_contact", contacts)):
        frames = []
        for d in days:
            prev = table[table["day"] < d].groupby("user_id", sort=True)["day"].max()
            frames.append(pd.DataFrame({"user_id": prev.index, "day": d, "last": prev.to_numpy()}))
        agg = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["user_id", "day", "last"])
        )
        j = _join(targets, agg, ["user_id"])
        gap = (j["day"] - j["last"]) / pd.Timedelta(days=1)
        out[name] = gap.to_numpy(dtype="float64")
    return out


@register("region_match", items=("item_region",), users=("user_region",))
def region_match(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """1 when the listing is in the user's region."""
    assert ctx.users is not None
    j = _with_items(targets, ctx.items, ["item_region"])
    u = targets[["user_id"]].merge(ctx.users[["user_id", "user_region"]], on="user_id", how="left")
    out = pd.DataFrame(index=targets.index)
    out["region_match"] = (j["item_region"].to_numpy() == u["user_region"].to_numpy()).astype(
        "float64"
    )
    return out
