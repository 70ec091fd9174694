"""The built-in feature builders. Each row on day D sees only events of days before D.

All builders work on canonical columns and return new columns aligned with `targets`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from replayml.features.registry import FeatureContext, register

#: a dense (key, day) grid is used while it has at most this many cells per history row
DENSE_CELLS_PER_ROW = 2


def _window_lookup(
    history: pd.DataFrame,
    targets: pd.DataFrame,
    keys: list[str],
    values: list[str],
    lookbacks: tuple[int, ...],
) -> dict[int, pd.DataFrame]:
    """For each lookback L and target row (day D, keys): sums of `values` and a row count `n`
    over the history rows with the same keys and days in [D - L, D - 1].

    Cumulative sums over the history's (key, day) cells, then two lookups per target row and
    lookback. Sums of integer outcomes are exact in float64, so both layouts give the same
    values.
    """
    # one integer per key combination: factorize each key over history and targets together,
    # combine the codes, then number the combinations seen in the history densely
    n_hist = len(history)
    combined = np.zeros(n_hist + len(targets), dtype="int64")
    for k in keys:
        codes, uniques = pd.factorize(pd.concat([history[k], targets[k]], ignore_index=True))
        combined = combined * (len(uniques) + 1) + (codes.astype("int64") + 1)
    hist_code, index = pd.factorize(combined[:n_hist])
    tgt_code = pd.Index(index).get_indexer(combined[n_hist:])
    one_day = np.timedelta64(1, "D")
    start = (
        min(history["day"].min(), targets["day"].min()) if len(history) else targets["day"].min()
    )
    hist_day = ((history["day"] - start) / one_day).to_numpy(dtype="int64")
    tgt_day = ((targets["day"] - start) / one_day).to_numpy(dtype="int64")
    n_days = int(max(hist_day.max(initial=0), tgt_day.max(initial=0))) + 1
    known = tgt_code >= 0
    row = np.where(known, tgt_code, 0).astype("int64")
    n_keys = max(len(index), 1)
    hist_cell = hist_code.astype("int64") * n_days + hist_day
    if n_keys * n_days <= DENSE_CELLS_PER_ROW * max(n_hist, 1):
        # few cells: a dense (key, day) grid, cumulated per key; column j sums days < j
        n_cells, cell_of_row = n_keys * n_days, hist_cell
        upper_at = row * (n_days + 1) + tgt_day
        lower_at = {w: upper_at - np.minimum(tgt_day, w) for w in lookbacks}

        def cumulative(per_cell: np.ndarray) -> np.ndarray:
            cum = np.zeros((n_keys, n_days + 1))
            np.cumsum(per_cell.reshape(n_keys, n_days), axis=1, out=cum[:, 1:])
            return cum.ravel()

    else:
        # many cells (e.g. user x category): only the cells that have history, sorted, with
        # one running sum; a key's cells are contiguous, so two binary searches bound a window
        cell_codes, cell_values = pd.factorize(hist_cell)
        order = np.argsort(cell_values)
        cells = cell_values[order]
        rank = np.empty(len(order), dtype="int64")
        rank[order] = np.arange(len(order))
        n_cells, cell_of_row = len(cells), rank[cell_codes]
        base = row * n_days
        upper_at = np.searchsorted(cells, base + tgt_day)
        lower_at = {
            w: np.searchsorted(cells, base + np.maximum(tgt_day - w, 0)) for w in lookbacks
        }

        def cumulative(per_cell: np.ndarray) -> np.ndarray:
            cum = np.zeros(len(per_cell) + 1)
            np.cumsum(per_cell, out=cum[1:])
            return cum

    out = {w: pd.DataFrame(index=targets.index) for w in lookbacks}
    for name, weights in [("n", None)] + [(v, history[v].to_numpy("float64")) for v in values]:
        cum = cumulative(np.bincount(cell_of_row, weights=weights, minlength=n_cells))
        upper = cum[upper_at]
        for w in lookbacks:
            out[w][name] = np.where(known, upper - cum[lower_at[w]], 0.0)
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
    sums = _window_lookup(hist, targets, [key], values, ctx.lookback_days)
    for w in ctx.lookback_days:
        j = sums[w]
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
    assert ctx.items is not None  # guaranteed by the registry's column check
    # categories as integer codes looked up per item (-1: unknown item or no category)
    codes, _ = pd.factorize(ctx.items["category"])
    item_index = pd.Index(ctx.items["item_id"])

    def category_code(frame: pd.DataFrame) -> np.ndarray:
        at = item_index.get_indexer(frame["item_id"])
        return np.where(at >= 0, codes[at], -1)

    hist = ctx.history.assign(category=category_code(ctx.history))
    tgt = targets.assign(category=category_code(targets))
    jc = _window_lookup(hist, tgt, ["user_id", "category"], ["label"], (w,))[w]
    ju = _window_lookup(hist, tgt, ["user_id"], ["label"], (w,))[w]
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
    """Log price and price relative to its category's median (item attributes are static);
    NaN where the category's median price is 0 (a ratio to it means nothing)."""
    assert ctx.items is not None
    items = ctx.items[["item_id", "category", "price"]]
    med = items.groupby("category", observed=True)["price"].median().rename("cat_median")
    items = items.merge(med, left_on="category", right_index=True, how="left")
    j = _with_items(targets, items, ["price", "cat_median"])
    out = pd.DataFrame(index=targets.index)
    out["log_price"] = np.log1p(j["price"].to_numpy(dtype="float64"))
    median = j["cat_median"].where(j["cat_median"] != 0)
    out["price_rel_category"] = (j["price"] / median).to_numpy(dtype="float64")
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
    """Days since the user's last impression and last contact before the target day, within
    the longest lookback (NaN beyond it): the value never depends on how much history was
    read, so a row's features are the same whatever the training window's length."""
    hist = ctx.history
    users, _ = pd.factorize(pd.concat([hist["user_id"], targets["user_id"]], ignore_index=True))
    users = users.astype("int64")
    hist_user, tgt_user = users[: len(hist)], users[len(hist) :]
    start = min(hist["day"].min(), targets["day"].min()) if len(hist) else targets["day"].min()
    one_day = np.timedelta64(1, "D")
    hist_day = ((hist["day"] - start) / one_day).to_numpy(dtype="int64")
    tgt_day = ((targets["day"] - start) / one_day).to_numpy(dtype="int64")
    n_days = int(max(hist_day.max(initial=0), tgt_day.max(initial=0))) + 1
    out = pd.DataFrame(index=targets.index)
    contact = hist["label"].to_numpy() > 0
    for name, rows in (("days_since_seen", slice(None)), ("days_since_contact", contact)):
        # the user's active days as sorted (user, day) cells; the cell just before
        # (user, D) is the user's last active day before D, if it belongs to the same user
        cells = np.unique(hist_user[rows] * n_days + hist_day[rows])
        gap = np.full(len(targets), np.nan)
        if len(cells):
            at = np.searchsorted(cells, tgt_user * n_days + tgt_day) - 1
            prev = cells[np.maximum(at, 0)]
            days = tgt_day - prev % n_days
            found = (at >= 0) & (prev // n_days == tgt_user) & (days <= max(ctx.lookback_days))
            gap[found] = days[found]
        out[name] = gap
    return out


@register("region_match", items=("item_region",), users=("user_region",))
def region_match(targets: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    """1 when the listing is in the user's region."""
    assert ctx.users is not None
    j = _with_items(targets, ctx.items, ["item_region"])
    u = targets[["user_id"]].merge(ctx.users[["user_id", "user_region"]], on="user_id", how="left")
    out = pd.DataFrame(index=targets.index)
    item_region = j["item_region"].to_numpy(dtype=object, na_value=None)
    user_region = u["user_region"].to_numpy(dtype=object, na_value=None)
    same = (item_region == user_region).astype("float64")
    # an item or user without a region (or missing from its table): unknown, not a mismatch
    unknown = pd.isna(item_region) | pd.isna(user_region)
    out["region_match"] = np.where(unknown, np.nan, same)
    return out
