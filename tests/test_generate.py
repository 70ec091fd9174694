"""Tests for the synthetic marketplace generator."""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from replayml.data.generate import GenerateSummary, generate

EVENT_TYPES = [
    ("ts", pa.timestamp("us")),
    ("user_id", pa.int32()),
    ("item_id", pa.int32()),
    ("position", pa.int8()),
    ("click", pa.int8()),
    ("contact", pa.int8()),
]
ITEM_TYPES = [
    ("item_id", pa.int32()),
    ("category", pa.string()),
    ("price", pa.float64()),
    ("region", pa.string()),
    ("listed_at", pa.timestamp("us")),
]
USER_TYPES = [
    ("user_id", pa.int32()),
    ("region", pa.string()),
    ("signup_at", pa.timestamp("us")),
]


def _digests(root: pathlib.Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_events(root: pathlib.Path) -> tuple[pa.Table, np.ndarray]:
    """All events plus, per row, the partition date (as datetime64[D])."""
    tables, dates = [], []
    for part in sorted((root / "events").iterdir()):
        t = pq.read_table(part / "part-0.parquet")
        tables.append(t)
        day = np.datetime64(part.name.removeprefix("date="), "D")
        dates.append(np.full(t.num_rows, day))
    return pa.concat_tables(tables), np.concatenate(dates)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, GenerateSummary]:
    out = tmp_path_factory.mktemp("gen") / "data"
    return out, generate(out, scale=0.02)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("gen") / "data"
    generate(out, scale=0.05)
    return out


def test_byte_identical_and_seed_sensitive(
    small: tuple[pathlib.Path, GenerateSummary], tmp_path: pathlib.Path
) -> None:
    first, summary = small
    again = generate(tmp_path / "again", scale=0.02)
    assert again == summary
    a, b = _digests(first), _digests(tmp_path / "again")
    assert len(a) == summary.files == 60 + 2
    assert a == b

    other = generate(tmp_path / "other", scale=0.02, seed=7)
    c = _digests(tmp_path / "other")
    assert c.keys() == a.keys()
    day = "events/date=2024-03-01/part-0.parquet"
    assert c[day] != a[day]
    assert _read_events(tmp_path / "other")[0] != _read_events(first)[0]
    assert other.n_events != summary.n_events


def test_schema_and_consistency(small: tuple[pathlib.Path, GenerateSummary]) -> None:
    root, summary = small
    assert 20_000 <= summary.n_events <= 40_000
    assert (summary.n_users, summary.n_items) == (400, 160)
    assert (summary.first_date, summary.last_date) == ("2024-03-01", "2024-04-29")

    parts = sorted(p.name for p in (root / "events").iterdir())
    start = dt.date(2024, 3, 1)
    assert parts == [f"date={start + dt.timedelta(days=d)}" for d in range(60)]
    for part in (root / "events").iterdir():
        assert [p.name for p in part.iterdir()] == ["part-0.parquet"]
        schema = pq.read_schema(part / "part-0.parquet")
        assert [(f.name, f.type) for f in schema] == EVENT_TYPES
        assert schema.metadata is None or b"pandas" not in schema.metadata

    items = pq.read_table(root / "items.parquet")
    users = pq.read_table(root / "users.parquet")
    assert [(f.name, f.type) for f in items.schema] == ITEM_TYPES
    assert [(f.name, f.type) for f in users.schema] == USER_TYPES
    assert items.num_rows == summary.n_items and users.num_rows == summary.n_users
    assert pc.all(pc.greater(items["price"], 0)).as_py()
    assert len(set(items["category"].to_pylist())) == 12
    listed = items["listed_at"].to_numpy()
    assert (listed < np.datetime64("2024-03-01")).any()
    assert (listed > np.datetime64("2024-03-15")).any()

    events, day = _read_events(root)
    assert events.num_rows == summary.n_events
    ts = events["ts"].to_numpy()
    assert (ts >= day).all() and (ts < day + np.timedelta64(1, "D")).all()
    click = events["click"].to_numpy()
    contact = events["contact"].to_numpy()
    pos = events["position"].to_numpy()
    assert set(np.unique(click)) <= {0, 1} and set(np.unique(contact)) <= {0, 1}
    assert (contact <= click).all()
    assert pos.min() == 0 and pos.max() == 9
    assert 0.04 < click.mean() < 0.12
    assert 0.004 < contact.mean() < 0.02

    uid = events["user_id"].to_numpy()
    iid = events["item_id"].to_numpy()
    assert np.isin(uid, users["user_id"].to_numpy()).all()
    assert np.isin(iid, items["item_id"].to_numpy()).all()
    item_index = {v: i for i, v in enumerate(items["item_id"].to_pylist())}
    assert (listed[[item_index[v] for v in iid.tolist()]] <= ts).all()

    # Sorted by (ts, user_id, position) within every partition, with some exact duplicates.
    order = np.lexsort((pos, uid, ts))
    assert (order == np.arange(order.size)).all()
    rows = np.rec.fromarrays([ts.astype(np.int64), uid, iid, pos, click, contact])
    dup_share = 1 - np.unique(rows).size / rows.size
    assert 0.001 < dup_share < 0.015


def test_refuses_non_empty_out_dir(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    keep = out / "keep.txt"
    keep.write_text("precious")
    with pytest.raises(FileExistsError):
        generate(out, scale=0.02, n_days=2)
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    summary = generate(empty, scale=0.02, n_days=3, start_date="2024-12-30")
    assert (summary.first_date, summary.last_date, summary.files) == (
        "2024-12-30",
        "2025-01-01",
        5,
    )


def test_signal_affinity_and_bots(medium: pathlib.Path) -> None:
    events, day = _read_events(medium)
    items = pq.read_table(medium / "items.parquet")
    cat_of = dict(zip(items["item_id"].to_pylist(), items["category"].to_pylist(), strict=True))
    uid = events["user_id"].to_numpy()
    iid = events["item_id"].to_numpy()
    contact = events["contact"].to_numpy().astype(bool)
    cats = np.array([cat_of[v] for v in iid.tolist()])
    first_half = day < np.datetime64("2024-03-31")

    # (user, category) pairs with a contact in the first 30 days ...
    hit = first_half & contact
    seen = set(zip(uid[hit].tolist(), cats[hit].tolist(), strict=True))
    # ... predict contacts in the last 30 days.
    later = ~first_half
    pairs = zip(uid[later].tolist(), cats[later].tolist(), strict=True)
    in_aff = np.array([pair in seen for pair in pairs])
    rate_aff = contact[later][in_aff].mean()
    rate_other = contact[later][~in_aff].mean()
    assert in_aff.sum() > 1_000
    assert rate_aff > 3 * rate_other

    # Bots: the top 2% of users by impressions click a lot and (almost) never contact.
    users, counts = np.unique(uid, return_counts=True)
    top = users[np.argsort(-counts, kind="stable")[: max(1, len(users) // 50)]]
    is_top = np.isin(uid, top)
    assert contact[is_top].mean() < 0.3 * contact[~is_top].mean()
    assert events["click"].to_numpy()[is_top].mean() > events["click"].to_numpy()[~is_top].mean()
