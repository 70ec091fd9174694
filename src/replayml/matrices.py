"""Cached feature matrices: what the DVC `features` stage writes and the `train` stage reads.

The cache carries the config sections, the data version and the code it was built from plus
the content hash of every matrix; reading it re-checks all four, so a stale or altered cache is
refused instead of silently training on the wrong rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replayml.config.resolve import DateWindows, Window, config_to_container
from replayml.config.schema import RunConfig
from replayml.errors import DataVersionError
from replayml.lineage.data import DataVersion, read_dvc_file

FEATURE_SECTIONS = ("data", "dates", "preprocessing", "features")
META = "meta.json"
_Y, _G, _R = "__label", "__group", "__grade"
_TEST_COLS = ("user_id", "item_id", "ts", "label")


#: the code that builds the matrices (the `features` stage's code deps in dvc.yaml)
BUILDER_CODE = ("data", "features", "config", "lineage", "matrices.py", "pipeline.py")


def builder_code_hash() -> str:
    """sha256 of the replayml code that builds the matrices, as it runs in this process."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for part in BUILDER_CODE:
        path = package / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()


def features_config_hash(cfg: RunConfig) -> str:
    """sha256 of the config sections that decide the matrices (dates already absolute)."""
    from replayml.pipeline import sections_hash

    return sections_hash(config_to_container(cfg), FEATURE_SECTIONS)


def save(
    out: Path, resolved: RunConfig, windows: DateWindows, version: DataVersion, m: Any
) -> None:
    """Write the three matrices and their meta data to `out` (replacing a previous cache)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid", "test"):
        split = getattr(m, name)
        frame = split.X.assign(**{_Y: split.y, _G: split.groups, _R: split.grades})
        if name == "test":
            extra = m.test_frame[list(_TEST_COLS)].add_prefix("__t_")
            frame = pd.concat([frame, extra], axis=1).assign(__popularity=m.test_popularity)
        frame.to_parquet(out / f"{name}.parquet", index=False)
    meta = {
        "features_config_hash": features_config_hash(resolved),
        "code_hash": builder_code_hash(),
        "windows": windows.as_dict(),
        "data_version": dataclasses.asdict(version),
        "slice_hashes": m.slice_hashes,
        "rows": m.rows,
        "preprocess": m.preprocess,
        "feature_names": m.feature_names,
        "valid_rows_hash": m.valid_rows_hash,
    }
    (out / META).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load(
    features_dir: Path, resolved: RunConfig, root: Path
) -> tuple[DateWindows, DataVersion, Any]:
    """Read cached matrices, refusing a cache built from other config, data or bytes."""
    from replayml.model.fit import Split
    from replayml.pipeline import Matrices, frame_hash

    meta_path = features_dir / META
    if not meta_path.is_file():
        raise DataVersionError(
            f"features_dir={features_dir} holds no {META}; build it with `dvc repro features`"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("code_hash") != builder_code_hash():
        raise DataVersionError(
            f"the cached features in {features_dir} were built by other replayml code (its "
            f"{', '.join(BUILDER_CODE)} changed since, e.g. a feature builder): they are not "
            f"what this code builds; rebuild them with `dvc repro features`"
        )
    if meta["features_config_hash"] != features_config_hash(resolved):
        raise DataVersionError(
            f"the cached features in {features_dir} were built from a different data/dates/"
            f"preprocessing/features config; rebuild them with `dvc repro features`"
        )
    version = DataVersion(
        **{**meta["data_version"], "files_read": tuple(meta["data_version"]["files_read"])}
    )
    if version.tracked:
        current, _, _ = read_dvc_file(root / version.dvc_file)
        if current != version.dvc_hash:
            raise DataVersionError(
                f"the cached features in {features_dir} were built from data {version.dvc_hash} "
                f"but {version.dvc_file} now records {current}; run `dvc repro`"
            )
    splits: dict[str, Any] = {}
    test_frame = pd.DataFrame()
    popularity = np.array([])
    for name in ("train", "valid", "test"):
        frame = pd.read_parquet(features_dir / f"{name}.parquet")
        X = frame[meta["feature_names"]]
        y = frame[_Y].to_numpy()
        if frame_hash(X, y) != meta["slice_hashes"][name]:
            raise DataVersionError(
                f"{features_dir / (name + '.parquet')} does not match the content hash in "
                f"{META}; the cache was altered: rebuild it with `dvc repro -f features`"
            )
        splits[name] = Split(X=X, y=y, groups=frame[_G].to_numpy(), grades=frame[_R].to_numpy())
        if name == "test":
            cols = {f"__t_{c}": c for c in _TEST_COLS}
            test_frame = frame[list(cols)].rename(columns=cols)
            popularity = frame["__popularity"].to_numpy("float64")
    w = meta["windows"]
    windows = DateWindows(
        *(Window(date.fromisoformat(w[f"{n}_start"]), date.fromisoformat(w[f"{n}_end"]))
          for n in ("train", "valid", "test"))
    )  # fmt: skip
    m = Matrices(
        train=splits["train"], valid=splits["valid"], test=splits["test"], test_frame=test_frame,
        test_popularity=popularity, feature_names=list(meta["feature_names"]),
        slice_hashes=dict(meta["slice_hashes"]), rows=dict(meta["rows"]),
        preprocess=dict(meta["preprocess"]), valid_rows_hash=meta.get("valid_rows_hash", ""),
    )  # fmt: skip
    return windows, version, m
