"""The data version of a run: the DVC hash in `data.dvc`, checked against the bytes we read.

`dvc status` trusts its hash cache and misses a corrupted cache file, so every file a run reads
is re-hashed here and compared with the DVC manifest of the recorded version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from replayml.errors import DataVersionError

UNTRACKED = "untracked"


@dataclass(frozen=True)
class DataVersion:
    """The DVC-tracked version of a data folder, and the files of it a run read."""

    dvc_file: str
    dvc_hash: str  # the `.dir` md5 from the .dvc file, or "untracked"
    path: str  # the tracked folder, relative to the project root
    nfiles: int
    files_read: tuple[str, ...]

    @property
    def tracked(self) -> bool:
        return self.dvc_hash != UNTRACKED


def file_md5(path: Path) -> str:
    """md5 of a file's bytes, the hash DVC 3 records for it."""
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_dvc_file(content: bytes | str) -> tuple[str, str, int]:
    """The (md5, path, nfiles) of the single output recorded in a `.dvc` file's text."""
    out = yaml.safe_load(content)["outs"][0]
    return str(out["md5"]), str(out["path"]), int(out.get("nfiles", 0))


def read_dvc_file(dvc_file: Path) -> tuple[str, str, int]:
    """The (md5, path, nfiles) of the single output recorded in a `.dvc` file."""
    try:
        return parse_dvc_file(dvc_file.read_bytes())
    except FileNotFoundError as exc:
        raise DataVersionError(
            f"{dvc_file} does not exist: track the data with `dvc add <folder>` "
            f"(or `make data` for the default dataset)"
        ) from exc
    except (KeyError, IndexError, TypeError, yaml.YAMLError) as exc:
        raise DataVersionError(f"{dvc_file} is not a valid .dvc file: {exc}") from exc


def dvc_cache_dir(root: Path) -> Path:
    """The md5 object folder of the project's DVC cache."""
    from dvc.config import Config

    # DVC's merged configuration (system, global, project, local; paths made absolute) is
    # enough unless the cache is a named remote; opening the whole repository costs more
    cache = Config(dvc_dir=str(root / ".dvc"))["cache"]
    if "local" not in cache:
        return Path(cache.get("dir") or root / ".dvc" / "cache") / "files" / "md5"
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local.path)


def load_manifest(cache_dir: Path, dir_hash: str, dvc_file: str = "") -> dict[str, str]:
    """relpath -> md5 for a `.dir` object in the cache, after checking the manifest's own hash.
    `dvc_file` (the .dvc file recording the version) names what to pull."""
    pull = f"`dvc pull {dvc_file}`" if dvc_file else "`dvc pull` of the .dvc file that records it"
    digest = dir_hash.removesuffix(".dir")
    path = cache_dir / digest[:2] / (digest[2:] + ".dir")
    if not path.is_file():
        raise DataVersionError(
            f"data version {dir_hash} is not in the DVC cache ({cache_dir}); "
            f"fetch it with {pull} (or `make data` for the default dataset)"
        )
    found = file_md5(path)
    if found != digest:
        raise DataVersionError(
            f"the DVC cache object {path} is corrupted: expected md5 {digest}, found {found}; "
            f"remove it and run {pull}"
        )
    return {entry["relpath"]: entry["md5"] for entry in json.loads(path.read_text())}


def _recorded(root: Path, dvc_file: str, data_root: str) -> tuple[str, int, Path, dict[str, str]]:
    """(`.dir` hash, nfiles, cache folder, manifest) of the version `dvc_file` records, after
    checking that it tracks `data_root`."""
    data_dir = (root / data_root).resolve()
    dir_hash, out_path, nfiles = read_dvc_file(root / dvc_file)
    tracked_dir = ((root / dvc_file).parent / out_path).resolve()
    if tracked_dir != data_dir:
        raise DataVersionError(
            f"data.root={data_root!r} resolves to {data_dir}, but {dvc_file} tracks "
            f"{tracked_dir}; set data.dvc_file to the .dvc file that tracks {data_root} (e.g. "
            f"data.dvc_file: {Path(data_root).name}.dvc after `dvc add {data_root}`), or point "
            f"data.root at the folder {dvc_file} tracks"
        )
    if not dir_hash.endswith(".dir"):
        folder = tracked_dir.parent
        shown = (
            folder.relative_to(root.resolve()) if folder.is_relative_to(root.resolve()) else folder
        )
        raise DataVersionError(
            f"{dvc_file} tracks a single file ({tracked_dir}, md5 {dir_hash}), and data.root "
            f"must be a folder tracked as a whole (it holds every table): `dvc remove "
            f"{dvc_file}` and `dvc add {shown}`, then set data.root={shown}, "
            f"data.dvc_file={shown}.dvc and data.events.path={tracked_dir.name}"
        )
    cache_dir = dvc_cache_dir(root)
    return dir_hash, nfiles, cache_dir, load_manifest(cache_dir, dir_hash, dvc_file)


def check_present(root: Path, dvc_file: str, data_root: str, table: str) -> None:
    """Refuse when files of the version in `dvc_file` under `table` (a file or folder relative
    to `data_root`) are missing from the workspace.

    The days present decide where relative windows end and how far back history reaches, so
    a deleted partition, or a `dvc pull` forgotten after updating `dvc_file`, would train on
    other days than the recorded version holds; the files read are hashed later, but a
    missing one is not read. Existence only, no hashing: cheap on every run.
    """
    if not dvc_file:
        return
    dir_hash, _, cache_dir, manifest = _recorded(root, dvc_file, data_root)
    data_dir = (root / data_root).resolve()
    under = PurePosixPath(table)
    wanted = sorted(rel for rel in manifest if PurePosixPath(rel).is_relative_to(under))
    missing = [rel for rel in wanted if not (data_dir / rel).is_file()]
    if not missing:
        return
    shown = ", ".join(f"{data_root}/{rel}" for rel in missing[:3])
    more = f" and {len(missing) - 3} more" if missing[3:] else ""
    cached = all((cache_dir / manifest[rel][:2] / manifest[rel][2:]).is_file() for rel in missing)
    restore = (
        f"restore them with `dvc checkout {dvc_file}`"
        if cached
        else f"fetch and restore them with `dvc pull {dvc_file}` (or `make data` for the "
        f"default dataset)"
    )
    raise DataVersionError(
        f"{len(missing)} of the {len(wanted)} files of {data_root}/{under} in the data version "
        f"of {dvc_file} ({dir_hash}) are missing from the workspace: {shown}{more} (a deleted "
        f"partition, or {dvc_file} updated without `dvc pull`?); a run would see other days "
        f"than that version holds. {restore[0].upper()}{restore[1:]}, or record the data "
        f"without them with `dvc add {data_root}` and commit {dvc_file}"
    )


def verify_files(
    root: Path,
    dvc_file: str,
    data_root: str,
    files: list[Path],
    belongs: Callable[[str], bool] | None = None,
) -> DataVersion:
    """Check that each file to be read is byte-identical to the version in `dvc_file`.

    `files` are absolute paths inside the tracked folder. `belongs(relpath)` tells which files
    of the version the read should include: one of them missing from `files` (a deleted
    partition) is an error too. Raises `DataVersionError` naming the path and both hashes on
    any difference, and pointing at `dvc pull` when data is missing.
    """
    data_dir = (root / data_root).resolve()
    if not dvc_file:
        rels = tuple(
            sorted(str((f.parent.resolve() / f.name).relative_to(data_dir)) for f in files)
        )
        return DataVersion("", UNTRACKED, data_root, len(rels), rels)
    dir_hash, nfiles, _, manifest = _recorded(root, dvc_file, data_root)
    rels: list[str] = []
    for f in files:
        rel = (f.parent.resolve() / f.name).relative_to(data_dir).as_posix()
        expected = manifest.get(rel)
        if expected is None:
            raise DataVersionError(
                f"{data_root}/{rel} is not part of the data version in {dvc_file} "
                f"({dir_hash}); record it with `dvc add {data_root}` and commit {dvc_file}"
            )
        if not f.is_file():
            raise DataVersionError(
                f"{data_root}/{rel} is missing from the workspace; restore the data with "
                f"`dvc pull {dvc_file}` (or `make data` for the default dataset)"
            )
        found = file_md5(f)
        if found != expected:
            raise DataVersionError(
                f"{data_root}/{rel} differs from {dvc_file}: expected md5 {expected}, "
                f"found {found}. Restore it with `dvc checkout --force {dvc_file}` (which "
                f"discards the edit), or record the new version with `dvc add {data_root}` and "
                f"commit {dvc_file}"
            )
        rels.append(rel)
    read = set(rels)
    for rel in sorted(manifest):
        if belongs is not None and rel not in read and belongs(rel):
            raise DataVersionError(
                f"{data_root}/{rel} is part of the data version in {dvc_file} ({dir_hash}) "
                f"but missing from the workspace (a deleted partition?); restore it with "
                f"`dvc checkout {dvc_file}`, or record the data without it with "
                f"`dvc add {data_root}` and commit {dvc_file}"
            )
    return DataVersion(dvc_file, dir_hash, data_root, nfiles, tuple(sorted(rels)))


def verify_all(root: Path, dvc_file: str, data_root: str) -> DataVersion:
    """Check every file of the tracked folder against its version, and that none is extra."""
    dir_hash, _, _ = read_dvc_file(root / dvc_file)
    manifest = load_manifest(dvc_cache_dir(root), dir_hash, dvc_file)
    data_dir = (root / data_root).resolve()
    on_disk = {
        p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()
    } if data_dir.is_dir() else set()  # fmt: skip
    extra = sorted(on_disk - set(manifest))
    if extra:
        raise DataVersionError(
            f"{data_root}/{extra[0]} (and {len(extra) - 1} more) are not in the data version of "
            f"{dvc_file} ({dir_hash}); record them with `dvc add {data_root}` or remove them"
        )
    return verify_files(root, dvc_file, data_root, [data_dir / rel for rel in sorted(manifest)])
