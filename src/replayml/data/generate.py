"""Deterministic synthetic marketplace (classifieds) impression log: the default dataset.

Users open result lists of up to ten listings; every shown listing is one impression row with a
`click` and a `contact` outcome. A latent world (user activity, category preferences, price
sensitivity, bots, listing quality and lifetimes) is drawn once from the seed; each day is then
simulated from `(seed, day index, world)` alone, vectorised with numpy, and written to its own
hive-style partition. Same arguments, same bytes.

Layout written under `out_dir`::

    events/date=YYYY-MM-DD/part-0.parquet   ts, user_id, item_id, position, click, contact
    items.parquet                           item_id, category, price, region, listed_at
    users.parquet                           user_id, region, signup_at
"""

from __future__ import annotations

import datetime as dt
import logging
import pathlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

__all__ = ["EVENTS_SCHEMA", "ITEMS_SCHEMA", "USERS_SCHEMA", "GenerateSummary", "generate"]

EVENTS_SCHEMA: Final = pa.schema(
    [
        ("ts", pa.timestamp("us")),
        ("user_id", pa.int32()),
        ("item_id", pa.int32()),
        ("position", pa.int8()),
        ("click", pa.int8()),
        ("contact", pa.int8()),
    ]
)
ITEMS_SCHEMA: Final = pa.schema(
    [
        ("item_id", pa.int32()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("region", pa.string()),
        ("listed_at", pa.timestamp("us")),
    ]
)
USERS_SCHEMA: Final = pa.schema(
    [
        ("user_id", pa.int32()),
        ("region", pa.string()),
        ("signup_at", pa.timestamp("us")),
    ]
)

# Parquet writer settings: part of the output's identity, change them and every hash changes.
_COMPRESSION: Final = "zstd"
_COMPRESSION_LEVEL: Final = 3
_ROW_GROUP_SIZE: Final = 1 << 20

_US_PER_DAY: Final = 86_400_000_000
_US_PER_HOUR: Final = 3_600_000_000

# World size at scale=1.0.
_USERS_AT_SCALE_1: Final = 20_000
_ITEMS_AT_SCALE_1: Final = 8_000

# name, share of listings, median price, Dirichlet weight of user interest
_CATEGORIES: Final = (
    ("vehicles", 0.10, 8_500.0, 1.3),
    ("real_estate", 0.06, 160_000.0, 0.9),
    ("electronics", 0.12, 240.0, 1.2),
    ("phones", 0.08, 300.0, 1.0),
    ("home_garden", 0.11, 60.0, 1.0),
    ("furniture", 0.09, 150.0, 0.9),
    ("fashion", 0.13, 30.0, 1.0),
    ("kids", 0.08, 25.0, 0.8),
    ("sports", 0.07, 90.0, 0.8),
    ("hobbies", 0.07, 45.0, 0.7),
    ("pets", 0.04, 120.0, 0.6),
    ("services", 0.05, 50.0, 0.5),
)
_REGIONS: Final = (
    ("capital", 0.30),
    ("north", 0.13),
    ("south", 0.13),
    ("east", 0.11),
    ("west", 0.11),
    ("coast", 0.09),
    ("lakes", 0.07),
    ("highlands", 0.06),
)
_N_CAT: Final = len(_CATEGORIES)
_N_REG: Final = len(_REGIONS)

# Monday..Sunday activity multipliers (weekends busier).
_WEEKDAY_MULT: Final = np.array([0.95, 0.92, 0.94, 0.96, 1.02, 1.22, 1.30])
# Hour-of-day session weights for humans (bots browse uniformly around the clock).
_HOUR_WEIGHTS: Final = np.array(
    [0.6, 0.35, 0.2, 0.15, 0.15, 0.25, 0.6, 1.2, 1.8, 2.0, 2.1, 2.2,
     2.5, 2.3, 2.1, 2.1, 2.2, 2.5, 3.0, 3.5, 3.8, 3.4, 2.4, 1.3]
)  # fmt: skip

# Behaviour parameters.
_MEAN_SESSIONS_PER_DAY: Final = 0.1  # a typical human user, before weekday/trend/in-market
_BOT_SHARE: Final = 0.02
_BOT_ACTIVE_PROB: Final = 0.12
_DUPLICATE_RATE: Final = 0.005
_PREFILLED_ITEM_SHARE: Final = 0.3
_CLICK_BASE: Final = -3.1
_CONTACT_BASE: Final = -2.6
_BOT_CLICK_LOGIT: Final = -1.2
_BOT_CONTACT_FACTOR: Final = 0.01

# Streams of the root seed: each purpose gets its own generator.
_STREAM_USERS: Final = 1
_STREAM_ITEMS: Final = 2
_STREAM_DAY: Final = 3


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote."""

    n_events: int
    n_users: int
    n_items: int
    first_date: str
    last_date: str
    files: int


@dataclass(frozen=True)
class _Users:
    """Observed user attributes and the latent behaviour behind them."""

    region: np.ndarray  # int, region index
    signup_us: np.ndarray  # int64 microseconds since epoch
    signup_day: np.ndarray  # int, day index of signup relative to start (may be negative)
    rate: np.ndarray  # expected sessions per day (humans) / per active day (bots)
    is_bot: np.ndarray  # bool
    pref_cum: np.ndarray  # (n, C) float32 cumulative category preference
    log_aff: np.ndarray  # (n * C,) float32 log affinity, flattened row-major
    p_pref: np.ndarray  # share of slots drawn from the user's preferred categories
    click_bias: np.ndarray
    contact_bias: np.ndarray
    price_sens: np.ndarray
    market_start: np.ndarray  # first day index of the user's "in-market" window
    market_end: np.ndarray  # one past the last day of it


@dataclass(frozen=True)
class _Items:
    """Observed listing attributes and the latent quality behind them."""

    category: np.ndarray  # int, category index
    region: np.ndarray  # int, region index
    price: np.ndarray  # float64
    rel_price: np.ndarray  # log(price / category median)
    listed_us: np.ndarray  # int64
    expires_us: np.ndarray  # int64
    quality: np.ndarray  # float64
    exposure: np.ndarray  # float64, Zipf-like base exposure weight


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _round_price(price: np.ndarray) -> np.ndarray:
    """Round to two significant digits, like prices people type into a listing."""
    step = 10.0 ** np.floor(np.log10(np.maximum(price, 1.0)) - 1.0)
    return np.maximum(np.round(price / step) * step, 1.0)


def _build_users(seed: int, n_users: int, n_days: int, start_us: int) -> _Users:
    rng = _rng(seed, _STREAM_USERS)
    region = rng.choice(_N_REG, size=n_users, p=np.array([r[1] for r in _REGIONS]))
    is_bot = rng.random(n_users) < _BOT_SHARE
    # 85% of humans (and all bots) signed up during the two years before the period.
    before = (rng.random(n_users) < 0.85) | is_bot
    offset_days = np.where(
        before, -rng.uniform(1.0, 730.0, n_users), rng.uniform(0.0, n_days, n_users)
    )
    signup_us = start_us + np.round(offset_days * _US_PER_DAY).astype(np.int64)
    order = np.argsort(signup_us, kind="stable")  # user ids grow with signup time
    region, signup_us, is_bot = region[order], signup_us[order], is_bot[order]
    signup_day = np.floor_divide(signup_us - start_us, _US_PER_DAY)

    sigma = 0.7
    rate = _MEAN_SESSIONS_PER_DAY * rng.lognormal(-0.5 * sigma**2, sigma, n_users)
    rate = np.where(is_bot, rng.uniform(7.0, 12.0, n_users), rate)

    alpha = 0.18 * np.array([c[3] for c in _CATEGORIES])
    gam = rng.gamma(np.broadcast_to(alpha, (n_users, _N_CAT)))
    gam[np.arange(n_users), rng.choice(_N_CAT, n_users, p=alpha / alpha.sum())] += 1e-3
    pref = gam / gam.sum(axis=1, keepdims=True)
    pref[is_bot] = 1.0 / _N_CAT
    pref_cum = np.cumsum(pref, axis=1).astype(np.float32)
    log_aff = np.clip(np.log(_N_CAT * pref + 0.04), -3.0, 2.3).astype(np.float32).ravel()

    p_pref = np.where(is_bot, 0.1, rng.beta(6.0, 3.0, n_users))
    shared = rng.normal(0.0, 1.0, n_users)
    click_bias = 0.35 * shared + 0.35 * rng.normal(0.0, 1.0, n_users)
    contact_bias = 0.45 * shared + 0.45 * rng.normal(0.0, 1.0, n_users)
    price_sens = rng.gamma(2.0, 0.55, n_users)

    has_market = rng.random(n_users) < 0.55
    market_start = rng.integers(-20, max(n_days, 1), n_users)
    market_len = rng.integers(5, 22, n_users)
    market_start = np.where(has_market & ~is_bot, market_start, np.iinfo(np.int32).max // 2)
    return _Users(
        region=region,
        signup_us=signup_us,
        signup_day=signup_day,
        rate=rate,
        is_bot=is_bot,
        pref_cum=pref_cum,
        log_aff=log_aff,
        p_pref=p_pref,
        click_bias=click_bias,
        contact_bias=contact_bias,
        price_sens=price_sens,
        market_start=market_start,
        market_end=market_start + market_len,
    )


def _build_items(seed: int, n_items: int, n_days: int, start_us: int) -> _Items:
    rng = _rng(seed, _STREAM_ITEMS)
    cat_share = np.array([c[1] for c in _CATEGORIES])
    category = rng.choice(_N_CAT, size=n_items, p=cat_share / cat_share.sum())
    region = rng.choice(_N_REG, size=n_items, p=np.array([r[1] for r in _REGIONS]))
    median = np.array([c[2] for c in _CATEGORIES])[category]
    price = _round_price(median * rng.lognormal(0.0, 0.65, n_items))
    lifetime_days = rng.uniform(10.0, 45.0, n_items)
    # A share of the inventory is already live at the start; the rest arrives through the period.
    prefilled = rng.random(n_items) < _PREFILLED_ITEM_SHARE
    offset_days = np.where(
        prefilled,
        -rng.random(n_items) * lifetime_days,
        rng.uniform(0.0, n_days, n_items),
    )
    listed_us = start_us + np.round(offset_days * _US_PER_DAY).astype(np.int64)
    quality = rng.normal(0.0, 0.75, n_items)
    exposure = np.exp(0.8 * quality) * (1.0 + rng.pareto(1.6, n_items))

    order = np.argsort(listed_us, kind="stable")  # item ids grow with listing time
    listed_us = listed_us[order]
    category, region, price = category[order], region[order], price[order]
    lifetime_days, quality, exposure = lifetime_days[order], quality[order], exposure[order]
    expires_us = listed_us + np.round(lifetime_days * _US_PER_DAY).astype(np.int64)
    rel_price = np.log(price / np.array([c[2] for c in _CATEGORIES])[category])
    return _Items(
        category=category,
        region=region,
        price=price,
        rel_price=rel_price,
        listed_us=listed_us,
        expires_us=expires_us,
        quality=quality,
        exposure=exposure,
    )


def _day_multiplier(day: int, n_days: int, start: dt.date) -> float:
    """Weekday effect times a mild upward trend with a gentle monthly wave."""
    date = start + dt.timedelta(days=day)
    trend = 1.0 + 0.12 * day / max(n_days - 1, 1)
    wave = 1.0 + 0.05 * np.sin(2.0 * np.pi * day / 30.0)
    return float(_WEEKDAY_MULT[date.weekday()] * trend * wave)


def _empty_events() -> pa.Table:
    return EVENTS_SCHEMA.empty_table()


def _simulate_day(
    seed: int, day: int, n_days: int, start: dt.date, users: _Users, items: _Items
) -> pa.Table:
    """One day of impressions; depends only on (seed, day, the world tables)."""
    rng = _rng(seed, _STREAM_DAY, day)
    start_us = _date_us(start)
    day_us = start_us + day * _US_PER_DAY

    # Live inventory: listed before the day starts and not expired before it ends.
    live = np.flatnonzero((items.listed_us <= day_us) & (items.expires_us >= day_us + _US_PER_DAY))
    if live.size == 0:
        return _empty_events()
    age0 = (day_us - items.listed_us[live]) / _US_PER_DAY
    weight = items.exposure[live] * (1.0 + 1.5 * np.exp(-age0 / 3.0))
    seg_key = items.category[live] * _N_REG + items.region[live]
    order = np.argsort(seg_key, kind="stable")
    live, weight, seg_key = live[order], weight[order], seg_key[order]
    cum0 = np.concatenate([[0.0], np.cumsum(weight)])
    n_live = live.size
    keys = np.arange(_N_CAT * _N_REG)
    seg_lo = np.searchsorted(seg_key, keys, side="left")
    seg_hi = np.searchsorted(seg_key, keys, side="right")
    cat_lo = seg_lo[::_N_REG]
    cat_hi = seg_hi[_N_REG - 1 :: _N_REG]

    # Sessions: humans after signup (weekday, trend, in-market), bots on a few frantic days.
    mult = _day_multiplier(day, n_days, start)
    in_market = (users.market_start <= day) & (day < users.market_end)
    human_rate = users.rate * mult * np.where(in_market, 2.0, 1.0)
    bot_rate = users.rate * (rng.random(users.rate.size) < _BOT_ACTIVE_PROB)
    rate = np.where(users.is_bot, bot_rate, human_rate) * (users.signup_day < day)
    n_sess = rng.poisson(rate)
    sess_user = np.repeat(np.arange(n_sess.size), n_sess)
    n_s = sess_user.size
    if n_s == 0:
        return _empty_events()
    sess_bot = users.is_bot[sess_user]
    hour = np.where(
        sess_bot,
        rng.integers(0, 24, n_s),
        rng.choice(24, size=n_s, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()),
    )
    sess_ts = day_us + hour * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, n_s)
    sess_len = np.where(sess_bot | (rng.random(n_s) < 0.7), 10, rng.integers(3, 10, n_s))

    # Slots: from the user's preferred categories (often local) or the global popular pool.
    slot_sess = np.repeat(np.arange(n_s), sess_len)
    n = slot_sess.size
    slot_user = sess_user[slot_sess]
    u_reg = users.region[slot_user]
    from_pref = rng.random(n) < users.p_pref[slot_user]
    draw = rng.random(n).astype(np.float32)
    cat = np.minimum((draw[:, None] > users.pref_cum[slot_user]).sum(axis=1), _N_CAT - 1)
    local = rng.random(n) < 0.6
    seg = cat * _N_REG + u_reg
    lo = np.where(local, seg_lo[seg], cat_lo[cat])
    hi = np.where(local, seg_hi[seg], cat_hi[cat])
    empty = hi <= lo
    lo = np.where(empty, cat_lo[cat], lo)
    hi = np.where(empty, cat_hi[cat], hi)
    use_global = ~from_pref | (hi <= lo)
    lo = np.where(use_global, 0, lo)
    hi = np.where(use_global, n_live, hi)
    pick = _sample(cum0, lo, hi, rng.random(n))

    # A result list does not repeat a listing: redraw repeats globally, drop what still repeats.
    for _ in range(3):
        dup = _repeated(slot_sess, pick, n_live)
        if not dup.any():
            break
        k = int(dup.sum())
        pick[dup] = _sample(cum0, np.zeros(k, np.int64), np.full(k, n_live), rng.random(k))
    keep = ~_repeated(slot_sess, pick, n_live)
    slot_sess, pick, slot_user = slot_sess[keep], pick[keep], slot_user[keep]
    n = slot_sess.size

    # The site ranks each list by a noisy popularity score; position is the rank.
    score = np.log(weight[pick]) + rng.gumbel(0.0, 1.0, n)
    order = np.lexsort((-score, slot_sess))
    slot_sess, pick, slot_user = slot_sess[order], pick[order], slot_user[order]
    first = np.searchsorted(slot_sess, slot_sess, side="left")
    position = (np.arange(n) - first).astype(np.int8)

    # Outcomes.
    item = live[pick]
    ts = sess_ts[slot_sess]
    bot = users.is_bot[slot_user]
    icat = items.category[item]
    aff = users.log_aff[slot_user * _N_CAT + icat]
    quality = items.quality[item]
    age = (ts - items.listed_us[item]) / _US_PER_DAY
    season = 0.15 * np.sin(2.0 * np.pi * (day / 45.0 + icat / _N_CAT))
    click_logit = (
        _CLICK_BASE
        + users.click_bias[slot_user]
        + 0.6 * aff
        + 0.35 * quality
        - 0.45 * np.log1p(position)
        + 0.35 * np.exp(-age / 4.0)
        + season
    )
    click_logit = np.where(bot, _BOT_CLICK_LOGIT - 0.05 * position, click_logit)
    click = rng.random(n) < _sigmoid(click_logit)
    same_region = users.region[slot_user] == items.region[item]
    market = (users.market_start[slot_user] <= day) & (day < users.market_end[slot_user])
    contact_logit = (
        _CONTACT_BASE
        + users.contact_bias[slot_user]
        + 0.7 * aff
        + 0.4 * quality
        - users.price_sens[slot_user] * items.rel_price[item]
        - 0.035 * age
        + 0.7 * same_region
        + 0.8 * market
    )
    p_contact = _sigmoid(contact_logit) * np.where(bot, _BOT_CONTACT_FACTOR, 1.0)
    contact = click & (rng.random(n) < p_contact)

    # Exact duplicate rows (double-logged impressions), then the canonical sort.
    rows = np.concatenate([np.arange(n), np.flatnonzero(rng.random(n) < _DUPLICATE_RATE)])
    rows = rows[np.lexsort((position[rows], slot_user[rows], ts[rows]))]
    return pa.table(
        [
            pa.array(ts[rows].astype("datetime64[us]")),
            pa.array((slot_user[rows] + 1).astype(np.int32)),
            pa.array((item[rows] + 1).astype(np.int32)),
            pa.array(position[rows]),
            pa.array(click[rows].astype(np.int8)),
            pa.array(contact[rows].astype(np.int8)),
        ],
        schema=EVENTS_SCHEMA,
    )


def _sample(cum0: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Weighted draw of one index in [lo, hi) per row, given cumulative weights `cum0`."""
    target = cum0[lo] + u * (cum0[hi] - cum0[lo])
    idx = np.searchsorted(cum0, target, side="right") - 1
    return np.clip(idx, lo, hi - 1)


def _repeated(sess: np.ndarray, pick: np.ndarray, n_live: int) -> np.ndarray:
    """Mask of slots whose listing already appeared earlier in the same session."""
    key = sess.astype(np.int64) * n_live + pick
    order = np.argsort(key, kind="stable")
    ks = key[order]
    mask = np.zeros(key.size, dtype=bool)
    mask[order[1:]] = ks[1:] == ks[:-1]
    return mask


def _date_us(date: dt.date) -> int:
    epoch = dt.date(1970, 1, 1)
    return (date - epoch).days * _US_PER_DAY


def _write(table: pa.Table, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        path,
        compression=_COMPRESSION,
        compression_level=_COMPRESSION_LEVEL,
        row_group_size=_ROW_GROUP_SIZE,
        write_statistics=True,
    )


def _ensure_empty_dir(out_dir: pathlib.Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"out_dir={out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise FileExistsError(
                f"out_dir={out_dir} exists and is not empty; refusing to overwrite. "
                "Choose a new directory or remove this one first."
            )
    out_dir.mkdir(parents=True, exist_ok=True)


def generate(
    out_dir: pathlib.Path,
    *,
    scale: float = 1.0,
    seed: int = 20240501,
    n_days: int = 60,
    start_date: str = "2024-03-01",
    progress: bool = False,
) -> GenerateSummary:
    """Write the synthetic marketplace dataset to `out_dir` (which must be absent or empty).

    `scale` multiplies users, listings and impressions (1.0 is about 1.4 M impressions over
    60 days, 20k users, 8k listings). The output bytes depend only on the arguments.
    """
    if not scale > 0:
        raise ValueError(f"scale={scale} must be > 0")
    if n_days < 1:
        raise ValueError(f"n_days={n_days} must be >= 1")
    start = dt.date.fromisoformat(start_date)
    out_dir = pathlib.Path(out_dir)
    _ensure_empty_dir(out_dir)

    n_users = max(int(round(_USERS_AT_SCALE_1 * scale)), 1)
    n_items = max(int(round(_ITEMS_AT_SCALE_1 * scale)), 1)
    start_us = _date_us(start)
    users = _build_users(seed, n_users, n_days, start_us)
    items = _build_items(seed, n_items, n_days, start_us)
    logger.info(
        "generating %d days from %s: scale=%s seed=%d users=%d items=%d",
        n_days, start.isoformat(), scale, seed, n_users, n_items,
    )  # fmt: skip

    _write(_users_table(users), out_dir / "users.parquet")
    _write(_items_table(items), out_dir / "items.parquet")

    n_events = 0
    dates = [(start + dt.timedelta(days=d)).isoformat() for d in range(n_days)]
    bar = None
    task = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task("generating days", total=n_days)
    try:
        for day, date in enumerate(dates):
            table = _simulate_day(seed, day, n_days, start, users, items)
            _write(table, out_dir / "events" / f"date={date}" / "part-0.parquet")
            n_events += table.num_rows
            logger.debug("day %s: %d events", date, table.num_rows)
            if bar is not None and task is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()

    summary = GenerateSummary(
        n_events=n_events,
        n_users=n_users,
        n_items=n_items,
        first_date=dates[0],
        last_date=dates[-1],
        files=n_days + 2,
    )
    logger.info("wrote %d events to %s", n_events, out_dir)
    return summary


def _users_table(users: _Users) -> pa.Table:
    n = users.region.size
    names = np.array([r[0] for r in _REGIONS], dtype=object)
    return pa.table(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int32)),
            pa.array(names[users.region].tolist(), type=pa.string()),
            pa.array(users.signup_us.astype("datetime64[us]")),
        ],
        schema=USERS_SCHEMA,
    )


def _items_table(items: _Items) -> pa.Table:
    n = items.category.size
    cats = np.array([c[0] for c in _CATEGORIES], dtype=object)
    regs = np.array([r[0] for r in _REGIONS], dtype=object)
    return pa.table(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int32)),
            pa.array(cats[items.category].tolist(), type=pa.string()),
            pa.array(items.price.astype(np.float64)),
            pa.array(regs[items.region].tolist(), type=pa.string()),
            pa.array(items.listed_us.astype("datetime64[us]")),
        ],
        schema=ITEMS_SCHEMA,
    )
